//! go-yaml's block emitter, for the value trees a schematic produces.
//!
//! Settings of go-yaml's `Marshal`: 4-space indentation, non-compact sequences (a sequence under a
//! key is indented one level), unlimited line width (no folding), unicode output, legacy quote
//! preference (strings that would resolve to another type are double-quoted; strings illegal as
//! plain scalars are single-quoted when that is possible).

use super::resolve::{format_go_float, is_base60_float, is_old_bool, resolve_plain, Resolved};

const BEST_INDENT: i64 = 4;
const SIMPLE_KEY_MAX_LEN: usize = 128;

/// A value to marshal, in the shapes Go's `any`, strings, integers and structs take.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Value>),
    /// Entries in emission order (struct field order, or sorted with [`go_key_less`] for maps).
    Map(Vec<(Value, Value)>),
}

/// Marshals a document the way go-yaml's `Marshal` does.
pub fn emit_document(root: &Value) -> String {
    let mut e = Emitter::default();
    e.node(root, Parent::Root);
    // Document end: the indentation of the (closed) root collection is -1, written as 0.
    e.write_indent();
    e.out
}

/// Go's map key order in go-yaml (`keyList.Less`): numbers and booleans by value, then by Go
/// kind; strings in "natural" order (digit runs compare numerically); different kinds by kind.
pub fn go_key_less(a: &Value, b: &Value) -> bool {
    let (ak, bk) = (go_kind(a), go_kind(b));
    if let (Some(af), Some(bf)) = (key_float(a), key_float(b)) {
        if af != bf {
            return af < bf;
        }
        if ak != bk {
            return ak < bk;
        }
        return match (a, b) {
            (Value::Int(x), Value::Int(y)) => x < y,
            (Value::Uint(x), Value::Uint(y)) => x < y,
            (Value::Float(x), Value::Float(y)) => x < y,
            (Value::Bool(x), Value::Bool(y)) => !x & y,
            _ => false,
        };
    }
    let (Value::Str(a), Value::Str(b)) = (a, b) else {
        return ak < bk;
    };
    natural_less(a, b)
}

/// Sorts map entries into go-yaml's order. An insertion sort: the natural-order comparison is not
/// a strict total order for every input, and this gives Go's result for the small maps schematics
/// hold (Go's sort also uses insertion sort below 13 elements) without ever panicking.
pub fn sort_go_map(entries: &mut [(Value, Value)]) {
    for i in 1..entries.len() {
        let mut j = i;
        while j > 0 && go_key_less(&entries[j].0, &entries[j - 1].0) {
            entries.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// `reflect.Kind` numbers, which go-yaml compares for keys of different types.
fn go_kind(v: &Value) -> u8 {
    match v {
        Value::Bool(_) => 1,
        Value::Int(_) => 2,
        Value::Uint(_) => 11,
        Value::Float(_) => 14,
        Value::Null => 20, // a nil interface
        Value::Map(_) => 21,
        Value::Seq(_) => 23,
        Value::Str(_) => 24,
    }
}

fn key_float(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Uint(u) => Some(*u as f64),
        Value::Float(f) => Some(*f),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn natural_less(a: &str, b: &str) -> bool {
    let (ar, br): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut digits = false;
    for i in 0..ar.len().min(br.len()) {
        if ar[i] == br[i] {
            digits = ar[i].is_numeric();
            continue;
        }
        let (al, bl) = (ar[i].is_alphabetic(), br[i].is_alphabetic());
        if al && bl {
            return ar[i] < br[i];
        }
        if al || bl {
            return if digits { al } else { bl };
        }
        let (mut an, mut bn) = (0i64, 0i64);
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && ar[j - 1].is_numeric() {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_numeric() {
            an = an.wrapping_mul(10).wrapping_add(ar[ai] as i64 - '0' as i64);
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_numeric() {
            bn = bn.wrapping_mul(10).wrapping_add(br[bi] as i64 - '0' as i64);
            bi += 1;
        }
        if an != bn {
            return an < bn;
        }
        if ai != bi {
            return ai < bi;
        }
        return ar[i] < br[i];
    }
    ar.len() < br.len()
}

/// The emitter state a child node is written in (go-yaml's pushed state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parent {
    Root,
    SeqItem,
    SimpleKey,
    ComplexKey,
    MapValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

#[derive(Debug)]
struct Emitter {
    out: String,
    column: i64,
    indent: i64,
    indents: Vec<i64>,
    whitespace: bool,
    indention: bool,
}

impl Default for Emitter {
    fn default() -> Self {
        Self {
            out: String::new(),
            column: 0,
            indent: -1,
            indents: Vec::new(),
            whitespace: true,
            indention: true,
        }
    }
}

impl Emitter {
    fn node(&mut self, v: &Value, parent: Parent) {
        match v {
            Value::Seq(items) if items.is_empty() => self.empty_flow("[]"),
            Value::Map(entries) if entries.is_empty() => self.empty_flow("{}"),
            Value::Seq(items) => {
                self.increase_indent(false, parent);
                for item in items {
                    self.write_indent();
                    self.write_indicator("-", true, false, true);
                    self.node(item, Parent::SeqItem);
                }
                self.pop_indent();
            }
            Value::Map(entries) => {
                self.increase_indent(false, parent);
                for (k, val) in entries {
                    self.write_indent();
                    if is_simple_key(k) {
                        self.node(k, Parent::SimpleKey);
                        self.write_indicator(":", false, false, false);
                    } else {
                        self.write_indicator("?", true, false, true);
                        self.node(k, Parent::ComplexKey);
                        self.write_indent();
                        self.write_indicator(":", true, false, true);
                    }
                    self.node(val, Parent::MapValue);
                }
                self.pop_indent();
            }
            scalar => {
                let (text, style) = represent(scalar);
                let style = select_style(&text, style, parent == Parent::SimpleKey);
                self.increase_indent(true, parent);
                match style {
                    Style::Plain => self.write_plain(&text),
                    Style::Single => self.write_single(&text),
                    Style::Double => self.write_double(&text),
                    Style::Literal => self.write_literal(&text),
                }
                self.pop_indent();
            }
        }
    }

    fn empty_flow(&mut self, text: &str) {
        self.write_indicator(&text[..1], true, true, false);
        self.write_indicator(&text[1..], false, false, false);
    }

    fn increase_indent(&mut self, flow: bool, parent: Parent) {
        self.indents.push(self.indent);
        if self.indent < 0 {
            self.indent = if flow { BEST_INDENT } else { 0 };
        } else if parent == Parent::SeqItem {
            // The first level inside a sequence item only skips the "- " indicator.
            self.indent += 2;
        } else {
            self.indent = BEST_INDENT * ((self.indent + BEST_INDENT) / BEST_INDENT);
        }
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().unwrap_or(-1);
    }

    fn put(&mut self, c: char) {
        self.out.push(c);
        self.column += 1;
    }

    fn put_line_break(&mut self) {
        self.out.push('\n');
        self.column = 0;
        self.indention = true;
    }

    /// Writes a line-break character of the value (go-yaml's `writeLineBreak`): `\n` as a line
    /// break, the unicode separators as themselves, both resetting the column.
    fn write_line_break(&mut self, c: char) {
        if c == '\n' {
            self.put_line_break();
        } else {
            self.out.push(c);
            self.column = 0;
            self.indention = true;
        }
    }

    fn write_indent(&mut self) {
        let indent = self.indent.max(0);
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_line_break();
        }
        while self.column < indent {
            self.put(' ');
        }
        self.whitespace = true;
    }

    fn write_indicator(
        &mut self,
        indicator: &str,
        need_whitespace: bool,
        is_whitespace: bool,
        is_indention: bool,
    ) {
        if need_whitespace && !self.whitespace {
            self.put(' ');
        }
        for c in indicator.chars() {
            self.put(c);
        }
        self.whitespace = is_whitespace;
        self.indention = self.indention && is_indention;
    }

    fn write_plain(&mut self, value: &str) {
        if !value.is_empty() && !self.whitespace {
            self.put(' ');
        }
        // A plain scalar never holds line breaks here (they rule the plain style out).
        for c in value.chars() {
            self.put(c);
        }
        if !value.is_empty() {
            self.whitespace = false;
        }
        self.indention = false;
    }

    fn write_single(&mut self, value: &str) {
        self.write_indicator("'", true, false, false);
        let mut breaks = false;
        for c in value.chars() {
            if c == ' ' {
                self.put(c);
            } else if is_line_break(c) {
                if !breaks && c == '\n' {
                    self.put_line_break();
                }
                self.write_line_break(c);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                if c == '\'' {
                    self.put('\'');
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
        self.write_indicator("'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_double(&mut self, value: &str) {
        self.write_indicator("\"", true, false, false);
        // go-yaml checks for a byte order mark at the start of the whole value for every
        // character, so a value starting with one is escaped throughout.
        let bom = value.starts_with('\u{feff}');
        for c in value.chars() {
            if !is_printable(c) || bom || is_line_break(c) || c == '"' || c == '\\' {
                self.put('\\');
                let short = match c {
                    '\0' => Some('0'),
                    '\u{7}' => Some('a'),
                    '\u{8}' => Some('b'),
                    '\t' => Some('t'),
                    '\n' => Some('n'),
                    '\u{b}' => Some('v'),
                    '\u{c}' => Some('f'),
                    '\r' => Some('r'),
                    '\u{1b}' => Some('e'),
                    '"' => Some('"'),
                    '\\' => Some('\\'),
                    '\u{85}' => Some('N'),
                    '\u{a0}' => Some('_'),
                    '\u{2028}' => Some('L'),
                    '\u{2029}' => Some('P'),
                    _ => None,
                };
                match short {
                    Some(s) => self.put(s),
                    None => {
                        let v = c as u32;
                        let (marker, width) = match v {
                            0..=0xff => ('x', 2),
                            0x100..=0xffff => ('u', 4),
                            _ => ('U', 8),
                        };
                        self.put(marker);
                        for ch in format!("{v:0width$X}").chars() {
                            self.put(ch);
                        }
                    }
                }
            } else {
                self.put(c);
            }
        }
        self.write_indicator("\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_literal(&mut self, value: &str) {
        self.write_indicator("|", true, false, false);
        // Block scalar hints: an indentation indicator when the text starts with a space (go-yaml
        // always writes its best indent, 4, there), then the chomping indicator.
        if value.starts_with(' ') {
            self.write_indicator(&BEST_INDENT.to_string(), false, false, false);
        }
        let chars: Vec<char> = value.chars().collect();
        let chomp = match chars.as_slice() {
            [] => Some("-"),
            [.., last] if !is_line_break(*last) => Some("-"),
            [_] => Some("+"),
            [.., prev, _] if is_line_break(*prev) => Some("+"),
            _ => None,
        };
        if let Some(ch) = chomp {
            self.write_indicator(ch, false, false, false);
        }
        self.put_line_break();
        self.whitespace = true;
        let mut breaks = true;
        for c in chars {
            if is_line_break(c) {
                self.write_line_break(c);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

fn is_simple_key(k: &Value) -> bool {
    match k {
        Value::Seq(_) | Value::Map(_) => false,
        scalar => {
            let (text, _) = represent(scalar);
            !text.chars().any(is_line_break) && text.len() <= SIMPLE_KEY_MAX_LEN
        }
    }
}

/// go-yaml's representer plus desolver: the text of a scalar and the style it asks for.
fn represent(v: &Value) -> (String, Style) {
    match v {
        Value::Null => ("null".into(), Style::Plain),
        Value::Bool(b) => (b.to_string(), Style::Plain),
        Value::Int(i) => (i.to_string(), Style::Plain),
        Value::Uint(u) => (u.to_string(), Style::Plain),
        Value::Float(f) => (format_go_float(*f), Style::Plain),
        Value::Str(s) => {
            let style = if s.contains('\n') {
                if should_use_literal(s) {
                    Style::Literal
                } else {
                    Style::Double
                }
            } else if is_base60_float(s) || is_old_bool(s) || s == "<<" {
                Style::Single
            } else if resolve_plain(s) != Resolved::Str {
                // Read back plain, it would not be a string.
                Style::Double
            } else {
                Style::Plain
            };
            (s.clone(), style)
        }
        Value::Seq(_) | Value::Map(_) => (String::new(), Style::Plain),
    }
}

fn should_use_literal(s: &str) -> bool {
    s.len() >= 2 && s.contains('\n') && s.chars().any(|c| !c.is_whitespace())
}

/// go-yaml's scalar analysis and style selection (block context).
fn select_style(value: &str, requested: Style, simple_key: bool) -> Style {
    let a = analyze(value);
    let mut style = requested;
    if simple_key && a.multiline {
        style = Style::Double;
    }
    if style == Style::Plain && (!a.block_plain_allowed || (value.is_empty() && simple_key)) {
        style = Style::Single;
    }
    if style == Style::Single && !a.single_quoted_allowed {
        style = Style::Double;
    }
    if style == Style::Literal && (!a.block_allowed || simple_key) {
        style = Style::Double;
    }
    style
}

#[derive(Debug)]
struct Analysis {
    multiline: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

fn analyze(value: &str) -> Analysis {
    if value.is_empty() {
        return Analysis {
            multiline: false,
            block_plain_allowed: true,
            single_quoted_allowed: true,
            block_allowed: false,
        };
    }
    let chars: Vec<char> = value.chars().collect();
    let mut block_indicators = value.starts_with("---") || value.starts_with("...");
    let (mut line_breaks, mut special, mut tabs) = (false, false, false);
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut previous_space, mut previous_break) = (false, false);
    let mut preceded_by_whitespace = true;
    let n = chars.len();
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_whitespace = i + 1 >= n || matches!(chars[i + 1], ' ' | '\t');
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"' | '%' | '@'
                | '`' => block_indicators = true,
                '?' | ':' | '-' if followed_by_whitespace => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_whitespace => block_indicators = true,
                '#' if preceded_by_whitespace => block_indicators = true,
                _ => {}
            }
        }
        if c == '\t' {
            tabs = true;
        } else if !is_printable(c) {
            special = true;
        }
        if c == ' ' {
            leading_space |= i == 0;
            trailing_space |= i + 1 == n;
            break_space |= previous_break;
            previous_space = true;
            previous_break = false;
        } else if is_line_break(c) {
            line_breaks = true;
            leading_break |= i == 0;
            trailing_break |= i + 1 == n;
            space_break |= previous_space;
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_whitespace = matches!(c, ' ' | '\t' | '\0') || is_line_break(c);
    }
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain_allowed: true,
        single_quoted_allowed: true,
        block_allowed: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain_allowed = false;
    }
    if trailing_space {
        a.block_allowed = false;
    }
    if break_space {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || tabs || special {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || special {
        a.block_allowed = false;
    }
    if line_breaks || block_indicators {
        a.block_plain_allowed = false;
    }
    a
}

fn is_line_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// YAML's printable set as go-yaml tests it (note: it leaves out characters beyond the BMP).
fn is_printable(c: char) -> bool {
    matches!(c, '\n' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
        && c != '\u{feff}'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    fn doc(entries: Vec<(&str, Value)>) -> String {
        emit_document(&Value::Map(entries.into_iter().map(|(k, v)| (s(k), v)).collect()))
    }

    #[test]
    fn nested_mapping_and_sequence_indentation() {
        let v = Value::Map(vec![(
            s("customization"),
            Value::Map(vec![(
                s("extraKernelArgs"),
                Value::Seq(vec![s("noapic"), s("nolapic")]),
            )]),
        )]);
        assert_eq!(
            emit_document(&v),
            "customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n"
        );
    }

    #[test]
    fn empty_mapping_is_flow() {
        assert_eq!(
            doc(vec![("customization", Value::Map(vec![]))]),
            "customization: {}\n"
        );
    }

    #[test]
    fn quoting_rules() {
        for (input, want) in [
            ("on", "'on'"),
            ("1.20", "\"1.20\""),
            ("", "\"\""),
            ("a: b", "'a: b'"),
            ("x\ty", "\"x\\ty\""),
            ("it's", "it's"),
            ("'x", "'''x'"),
            ("-a", "-a"),
            ("- a", "'- a'"),
        ] {
            assert_eq!(doc(vec![("k", s(input))]), format!("k: {want}\n"), "{input:?}");
        }
    }

    #[test]
    fn literal_blocks_and_chomping() {
        assert_eq!(doc(vec![("k", s("a\nb\n"))]), "k: |\n    a\n    b\n");
        assert_eq!(doc(vec![("k", s("a\nb"))]), "k: |-\n    a\n    b\n");
        assert_eq!(doc(vec![("k", s("a\n\n"))]), "k: |+\n    a\n\n");
        assert_eq!(doc(vec![("k", s(" a\n"))]), "k: |4\n     a\n");
    }

    #[test]
    fn natural_key_order() {
        let keys: Vec<Value> = ["x10", "x9", "X", "a1b", "a01b", "_", "1", "2", "true"]
            .map(s)
            .to_vec();
        let mut entries: Vec<(Value, Value)> = keys.into_iter().map(|k| (k, Value::Null)).collect();
        sort_go_map(&mut entries);
        let keys: Vec<Value> = entries.into_iter().map(|(k, _)| k).collect();
        let got: Vec<String> = keys
            .into_iter()
            .map(|k| if let Value::Str(k) = k { k } else { String::new() })
            .collect();
        assert_eq!(got, ["_", "1", "2", "X", "a1b", "a01b", "true", "x9", "x10"]);
    }
}
