//! A kernel command line with the merge semantics of `siderolabs/go-procfs` v0.1.2 (the version
//! Talos' imager links), which decide the exact text of every Talos cmdline.
//!
//! The model is an ordered list of *parameters*; each has a key and an ordered list of values.
//! A key appears once: a later value for the same key joins the existing parameter, so it is
//! printed next to the earlier ones (`console=tty0 root=x console=ttyS0` prints as
//! `console=tty0 console=ttyS0 root=x`). A value `""` prints as the bare key (`slab_nomerge=` and
//! `slab_nomerge` both print `slab_nomerge`). A parameter whose values were all deleted keeps its
//! position and prints nothing; a later value for that key is printed at that old position.

use std::fmt;

/// One key with its values, in the order they were added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    key: String,
    values: Vec<String>,
}

impl Parameter {
    /// A parameter with no values (prints nothing until one is appended).
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            values: Vec::new(),
        }
    }

    /// Adds a value (builder style, as `procfs.NewParameter(k).Append(v)`).
    pub fn with(mut self, value: impl Into<String>) -> Self {
        self.values.push(value.into());
        self
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// The first value, if any.
    pub fn first(&self) -> Option<&str> {
        self.values.first().map(String::as_str)
    }

    pub fn contains(&self, value: &str) -> bool {
        self.values.iter().any(|v| v == value)
    }
}

/// Options of [`Cmdline::append_all`] (go-procfs `AppendAllOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendAllOptions {
    /// Keys whose new values replace the existing ones in place instead of being added.
    pub overwrite_args: Vec<String>,
    /// Whether `-key` deletes the key and `-key=value` deletes that value.
    pub delete_negated_args: bool,
}

/// A kernel command line (go-procfs `Cmdline`). [`fmt::Display`] gives the exact text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<Parameter>,
}

impl Cmdline {
    /// An empty command line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a command line (go-procfs `NewCmdline`): one trailing `\n` is dropped, the text is
    /// split on Unicode whitespace (Go's `strings.Fields` and Rust's `split_whitespace` agree on
    /// the set), each field on its first `=`; repeated keys are merged at the first appearance.
    pub fn parse(text: &str) -> Self {
        let line = text.strip_suffix('\n').unwrap_or(text);
        let mut cmdline = Self::new();
        for field in line.split_whitespace() {
            let (key, value) = field.split_once('=').unwrap_or((field, ""));
            cmdline.append(key, value);
        }
        cmdline
    }

    /// Parses several arguments as go-procfs does: joined with a space first, so one element may
    /// carry several arguments (`["a=1 b", "c"]` is three parameters).
    pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Self {
        let joined: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        Self::parse(&joined.join(" "))
    }

    /// The parameters in print order.
    pub fn parameters(&self) -> &[Parameter] {
        &self.params
    }

    /// Whether nothing would be printed.
    pub fn is_empty(&self) -> bool {
        self.params.iter().all(|p| p.values.is_empty())
    }

    pub fn get(&self, key: &str) -> Option<&Parameter> {
        self.params.iter().find(|p| p.key == key)
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.params.iter().position(|p| p.key == key)
    }

    /// Adds a value to the key where it already is, or adds the key at the end (`Append`).
    pub fn append(&mut self, key: &str, value: &str) {
        match self.position(key) {
            Some(i) => self.params[i].values.push(value.to_owned()),
            None => self.params.push(Parameter::new(key).with(value)),
        }
    }

    /// Replaces the parameter of the same key in place, all its values included, or adds it at
    /// the end (`Set`).
    pub fn set(&mut self, param: Parameter) {
        match self.position(&param.key) {
            Some(i) => self.params[i] = param,
            None => self.params.push(param),
        }
    }

    /// [`Cmdline::set`] for each parameter of the parsed arguments (`SetAll`): a key named there
    /// keeps its position here but gets exactly the values given there.
    pub fn set_all<S: AsRef<str>>(&mut self, args: &[S]) {
        for param in Self::parse_args(args).params {
            self.set(param);
        }
    }

    /// Removes the given values from the key, which stays (possibly with no values) so that its
    /// position is kept (`Delete`). Unknown key: nothing happens.
    pub fn delete<S: AsRef<str>>(&mut self, key: &str, values: &[S]) {
        if let Some(i) = self.position(key) {
            self.params[i]
                .values
                .retain(|v| !values.iter().any(|d| d.as_ref() == v));
        }
    }

    /// Removes the key and all its values (`DeleteAll`).
    pub fn delete_all(&mut self, key: &str) {
        if let Some(i) = self.position(key) {
            self.params.remove(i);
        }
    }

    /// Merges the parsed arguments in (`AppendAll`), parameter by parameter in the order of their
    /// first appearance in `args`:
    ///
    /// * with `delete_negated_args`, a key longer than one byte starting with `-` is a removal:
    ///   when its *first* value is empty (`-console`, even as `-console -console=tty0`) the key
    ///   goes entirely, otherwise (`-console=tty0`) all its values are removed from the key. A
    ///   lone `-` is an ordinary kernel argument;
    /// * a key in `overwrite_args` replaces the existing key in place ([`Cmdline::set`]);
    /// * otherwise each value is appended, so `selinux=0` after `selinux=1` keeps both.
    pub fn append_all<S: AsRef<str>>(&mut self, args: &[S], options: &AppendAllOptions) {
        for param in Self::parse_args(args).params {
            if options.delete_negated_args && param.key.len() > 1 && param.key.starts_with('-') {
                let target = &param.key[1..];
                // A parsed parameter always has at least one value.
                if param.first().unwrap_or_default().is_empty() {
                    self.delete_all(target);
                } else {
                    self.delete(target, &param.values);
                }
                continue;
            }
            if options.overwrite_args.contains(&param.key) {
                self.set(param);
                continue;
            }
            for value in &param.values {
                self.append(&param.key, value);
            }
        }
    }

    /// The printed arguments one by one (`key` or `key=value`).
    pub fn args(&self) -> Vec<String> {
        self.params
            .iter()
            .flat_map(|p| {
                p.values.iter().map(move |v| {
                    if v.is_empty() {
                        p.key.clone()
                    } else {
                        format!("{}={}", p.key, v)
                    }
                })
            })
            .collect()
    }
}

impl fmt::Display for Cmdline {
    /// Arguments separated by one space, no leading or trailing blank.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.args().join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overwrite(keys: &[&str], negate: bool) -> AppendAllOptions {
        AppendAllOptions {
            overwrite_args: keys.iter().map(|k| (*k).to_owned()).collect(),
            delete_negated_args: negate,
        }
    }

    fn keys_unique(c: &Cmdline) -> bool {
        let mut keys: Vec<&str> = c.parameters().iter().map(Parameter::key).collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        keys.len() == n
    }

    #[test]
    fn parse_merges_repeated_keys_at_first_appearance() {
        let c = Cmdline::parse("console=tty0 root=/dev/sda console=ttyS0,115200 quiet\n");
        assert_eq!(
            c.to_string(),
            "console=tty0 console=ttyS0,115200 root=/dev/sda quiet"
        );
        assert_eq!(c.parameters().len(), 3);
        assert_eq!(
            c.get("console").map(Parameter::values),
            Some(&["tty0".to_owned(), "ttyS0,115200".to_owned()][..])
        );
    }

    #[test]
    fn parse_splits_on_first_equals_and_any_whitespace() {
        let c = Cmdline::parse("  this=that=those\tslab_nomerge=  flag\u{a0}x=1 ");
        assert_eq!(c.to_string(), "this=that=those slab_nomerge flag x=1");
        assert_eq!(c.get("this").and_then(Parameter::first), Some("that=those"));
        assert_eq!(c.get("slab_nomerge").and_then(Parameter::first), Some(""));
        assert!(Cmdline::parse("").is_empty());
        assert_eq!(Cmdline::parse("").to_string(), "");
    }

    #[test]
    fn parse_args_joins_elements_so_one_element_may_hold_several_args() {
        let c = Cmdline::parse_args(&["a=1 b", "c", "a=2"]);
        assert_eq!(c.to_string(), "a=1 a=2 b c");
    }

    #[test]
    fn set_replaces_in_place_or_adds_at_end() {
        let mut c = Cmdline::parse("root=/dev/sdb root=/dev/sdc aye=sir");
        c.set_all(&["root=/dev/mmcblk0"]);
        assert_eq!(c.to_string(), "root=/dev/mmcblk0 aye=sir");

        let mut c = Cmdline::new();
        c.set_all(&["root=/dev/sda", "root=/dev/sdb"]);
        assert_eq!(c.to_string(), "root=/dev/sda root=/dev/sdb");
        assert!(keys_unique(&c));
    }

    #[test]
    fn delete_removes_values_but_keeps_the_key_position() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("console=tty0", &[""], "console=tty0"),
            ("console=tty0", &["tty"], "console=tty0"),
            ("console=tty0", &["tty0"], ""),
            (
                "console=tty0 console=ttyS0,9600 root=/dev/sda panic=0 console=ttyS0,115000",
                &["ttyS0,9600", "tty0"],
                "console=ttyS0,115000 root=/dev/sda panic=0",
            ),
            ("root=/dev/sda panic=0", &["ttyS0,9600"], "root=/dev/sda panic=0"),
        ];
        for (initial, values, expected) in cases {
            let mut c = Cmdline::parse(initial);
            c.delete("console", values);
            assert_eq!(c.to_string(), *expected, "{initial} - {values:?}");
        }

        // The emptied key keeps its slot: a later value is printed there.
        let mut c = Cmdline::parse("console=tty0 root=/dev/sda");
        c.delete("console", &["tty0"]);
        c.append("console", "ttyS0");
        assert_eq!(c.to_string(), "console=ttyS0 root=/dev/sda");
    }

    #[test]
    fn delete_all_removes_the_key() {
        let mut c =
            Cmdline::parse("console=tty0 console=ttyS0,9600 root=/dev/sda panic=0 console=ttyS0,115000");
        c.delete_all("console");
        assert_eq!(c.to_string(), "root=/dev/sda panic=0");
        c.append("console", "tty1");
        assert_eq!(c.to_string(), "root=/dev/sda panic=0 console=tty1");
    }

    /// The upstream go-procfs `TestCmdlineAppendAll` table, restated.
    #[test]
    fn append_all_upstream_cases() {
        let cases: Vec<(&str, Vec<&str>, AppendAllOptions, &str)> = vec![
            (
                "ip=dhcp console=x root=/dev/sdc",
                vec!["root=/dev/sda", "root=/dev/sdb"],
                AppendAllOptions::default(),
                "ip=dhcp console=x root=/dev/sdc root=/dev/sda root=/dev/sdb",
            ),
            (
                "root=/dev/sdb",
                vec!["this=that=those"],
                AppendAllOptions::default(),
                "root=/dev/sdb this=that=those",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                vec!["console=tty0", "console=ttyS1,115200", "nogui"],
                AppendAllOptions::default(),
                "console=tty0 console=ttyS0 console=tty0 console=ttyS1,115200 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                vec!["console=tty0", "console=ttyS1,115200", "nogui"],
                overwrite(&["console"], false),
                "console=tty0 console=ttyS1,115200 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                vec!["-console", "nogui"],
                overwrite(&["console"], true),
                "root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0,9600 root=/dev/sdb",
                vec!["-console", "nogui"],
                overwrite(&[], true),
                "root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0,9600 root=/dev/sdb",
                vec!["-console=ttyS0,9600", "nogui"],
                overwrite(&[], true),
                "console=tty0 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                vec!["-console=tty0", "nogui"],
                overwrite(&["console"], true),
                "console=ttyS0 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                vec!["-console", "nogui", "console=ttyAMA0"],
                overwrite(&["console"], true),
                "root=/dev/sdb nogui console=ttyAMA0",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                vec!["-console=tty0", "nogui", "console=ttyAMA0"],
                overwrite(&[], true),
                "console=ttyS0 console=ttyAMA0 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                vec!["-console=tty0", "nogui", "console=ttyAMA0"],
                overwrite(&["console"], true),
                "console=ttyAMA0 root=/dev/sdb nogui",
            ),
        ];
        for (initial, args, options, expected) in cases {
            let mut c = Cmdline::parse(initial);
            c.append_all(&args, &options);
            assert_eq!(c.to_string(), expected, "{initial} + {args:?}");
            assert!(keys_unique(&c), "{initial} + {args:?}");
        }
    }

    #[test]
    fn negation_is_off_unless_asked_and_a_lone_dash_is_an_argument() {
        let mut c = Cmdline::parse("console=tty0");
        c.append_all(&["-console"], &AppendAllOptions::default());
        assert_eq!(c.to_string(), "console=tty0 -console");

        let mut c = Cmdline::parse("console=tty0");
        c.append_all(&["-", "-=x"], &overwrite(&[], true));
        assert_eq!(c.to_string(), "console=tty0 - -=x");
    }

    #[test]
    fn negation_looks_at_the_first_value_only() {
        // `-console=tty0 -console` parses as one parameter with values [tty0, ""]: the first is
        // not empty, so only the listed values go and the key stays.
        let mut c = Cmdline::parse("console=tty0 console=ttyS0 root=x");
        c.append_all(&["-console=tty0 -console"], &overwrite(&[], true));
        assert_eq!(c.to_string(), "console=ttyS0 root=x");

        // `-console -console=tty0`: the first value is empty, the whole key goes.
        let mut c = Cmdline::parse("console=tty0 console=ttyS0 root=x");
        c.append_all(&["-console -console=tty0"], &overwrite(&[], true));
        assert_eq!(c.to_string(), "root=x");

        // Removing something absent does nothing; `--x` removes the key `-x`.
        let mut c = Cmdline::parse("a=1 -x=2");
        c.append_all(&["-b", "-a=9", "--x"], &overwrite(&[], true));
        assert_eq!(c.to_string(), "a=1");
    }

    #[test]
    fn appending_the_same_value_twice_keeps_both() {
        let mut c = Cmdline::parse("selinux=1 pti=on");
        c.append_all(&["selinux=0", "pti=on"], &AppendAllOptions::default());
        assert_eq!(c.to_string(), "selinux=1 selinux=0 pti=on pti=on");
    }

    #[test]
    fn args_lists_each_printed_argument() {
        let c = Cmdline::parse("a b=1 a=2");
        assert_eq!(c.args(), vec!["a", "a=2", "b=1"]);
    }
}
