//! CloudFormation intrinsic functions, evaluated for one local deployment.
//!
//! Only what the template uses where the local stack needs a value: environment variables, the
//! HTTP API's integration URIs, the CDN's origins. Both spellings are accepted: the short YAML
//! tags (`!Ref`, `!Sub`, ...) and the long JSON form (`{"Fn::Sub": ...}`). Anything else, or a
//! `Ref` to a resource this deployment does not provide, is an error naming it, so a template
//! change the local stack does not understand fails loudly instead of running with a wrong value.

use std::collections::BTreeMap;

use serde_yaml_ng::value::TaggedValue;
use serde_yaml_ng::Value;

use crate::Error;

/// Everything a reference can resolve to in this deployment.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `AWS::StackName`, `AWS::Region`, ... and every template parameter (defaults merged with
    /// overrides).
    pub refs: BTreeMap<String, String>,
    /// `!GetAtt Logical.Attribute` values of the resources the local stack stands in for.
    pub attributes: BTreeMap<String, String>,
    /// Conditions of the template, evaluated.
    pub conditions: BTreeMap<String, bool>,
    /// `{{resolve:secretsmanager:ID}}` (or `ID:SecretString`) values by secret ID (name or ARN).
    pub secrets: BTreeMap<String, String>,
}

impl Context {
    fn reference(&self, name: &str) -> Result<String, Error> {
        self.refs
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Template(format!("!Ref {name}: not provided by the local stack")))
    }

    fn attribute(&self, name: &str) -> Result<String, Error> {
        self.attributes
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Template(format!("!GetAtt {name}: not provided by the local stack")))
    }

    /// Evaluates `value` to a string (numbers and booleans as YAML writes them), dynamic
    /// references resolved (CloudFormation resolves them after the intrinsic functions).
    pub fn string(&self, value: &Value) -> Result<String, Error> {
        self.dynamic_references(&self.raw(value)?)
    }

    /// [`Self::string`] without resolving dynamic references.
    pub fn raw(&self, value: &Value) -> Result<String, Error> {
        match self.eval(value)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(Error::Template(format!("expected a string, got {other:?}"))),
        }
    }

    /// Evaluates every intrinsic function in `value` (recursively).
    pub fn eval(&self, value: &Value) -> Result<Value, Error> {
        match value {
            Value::Tagged(tagged) => self.tagged(tagged),
            Value::Mapping(map) if map.len() == 1 => {
                let (key, arg) = map.iter().next().expect("one entry");
                match key.as_str() {
                    Some("Ref") => self.function("Ref", arg),
                    Some(name) if name.starts_with("Fn::") || name == "Condition" => {
                        self.function(name.trim_start_matches("Fn::"), arg)
                    }
                    _ => self.mapping(map),
                }
            }
            Value::Mapping(map) => self.mapping(map),
            Value::Sequence(items) => Ok(Value::Sequence(
                items.iter().map(|v| self.eval(v)).collect::<Result<_, _>>()?,
            )),
            other => Ok(other.clone()),
        }
    }

    fn mapping(&self, map: &serde_yaml_ng::Mapping) -> Result<Value, Error> {
        let mut out = serde_yaml_ng::Mapping::new();
        for (k, v) in map {
            out.insert(k.clone(), self.eval(v)?);
        }
        Ok(Value::Mapping(out))
    }

    fn tagged(&self, tagged: &TaggedValue) -> Result<Value, Error> {
        let tag = tagged.tag.to_string();
        let name = tag.trim_start_matches('!');
        self.function(name, &tagged.value)
    }

    fn function(&self, name: &str, arg: &Value) -> Result<Value, Error> {
        let s = |v: String| Ok(Value::String(v));
        match name {
            "Ref" => s(self.reference(&self.raw(arg)?)?),
            "GetAtt" => {
                let path = match self.eval(arg)? {
                    Value::String(p) => p,
                    Value::Sequence(parts) => parts
                        .iter()
                        .map(|p| self.raw(p))
                        .collect::<Result<Vec<_>, _>>()?
                        .join("."),
                    other => return Err(Error::Template(format!("!GetAtt {other:?}"))),
                };
                s(self.attribute(&path)?)
            }
            "Sub" => match arg {
                Value::Sequence(parts) if parts.len() == 2 => {
                    let mut local = BTreeMap::new();
                    if let Value::Mapping(vars) = &parts[1] {
                        for (k, v) in vars {
                            let key = k.as_str().unwrap_or_default().to_owned();
                            local.insert(key, self.raw(v)?);
                        }
                    }
                    s(self.substitute(&self.raw(&parts[0])?, &local)?)
                }
                other => s(self.substitute(&self.raw(other)?, &BTreeMap::new())?),
            },
            "If" => {
                let parts = sequence(arg, 3, "!If")?;
                let condition = parts[0].as_str().unwrap_or_default();
                let chosen = if self.condition(condition)? {
                    &parts[1]
                } else {
                    &parts[2]
                };
                self.eval(chosen)
            }
            "Join" => {
                let parts = sequence(arg, 2, "!Join")?;
                let separator = self.raw(&parts[0])?;
                let items = self.list(&parts[1])?;
                s(items.join(&separator))
            }
            "Select" => {
                let parts = sequence(arg, 2, "!Select")?;
                let index: usize = self
                    .string(&parts[0])?
                    .parse()
                    .map_err(|_| Error::Template("!Select index".into()))?;
                let items = self.list(&parts[1])?;
                items
                    .get(index)
                    .cloned()
                    .map(Value::String)
                    .ok_or_else(|| Error::Template(format!("!Select {index} out of range")))
            }
            "Split" => {
                let parts = sequence(arg, 2, "!Split")?;
                let separator = self.raw(&parts[0])?;
                let text = self.raw(&parts[1])?;
                Ok(Value::Sequence(
                    text.split(separator.as_str())
                        .map(|p| Value::String(p.to_owned()))
                        .collect(),
                ))
            }
            "Equals" => {
                let parts = sequence(arg, 2, "!Equals")?;
                Ok(Value::Bool(self.raw(&parts[0])? == self.raw(&parts[1])?))
            }
            "Not" => {
                let parts = sequence(arg, 1, "!Not")?;
                Ok(Value::Bool(!self.truth(&parts[0])?))
            }
            "And" | "Or" => {
                let items = match arg {
                    Value::Sequence(items) => items,
                    _ => return Err(Error::Template(format!("!{name} needs a list"))),
                };
                let values = items
                    .iter()
                    .map(|v| self.truth(v))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Value::Bool(if name == "And" {
                    values.iter().all(|v| *v)
                } else {
                    values.iter().any(|v| *v)
                }))
            }
            "Condition" => Ok(Value::Bool(self.condition(&self.raw(arg)?)?)),
            other => Err(Error::Template(format!(
                "intrinsic function {other} is not supported by the local stack"
            ))),
        }
    }

    fn truth(&self, value: &Value) -> Result<bool, Error> {
        match self.eval(value)? {
            Value::Bool(b) => Ok(b),
            other => Err(Error::Template(format!("expected a condition, got {other:?}"))),
        }
    }

    fn condition(&self, name: &str) -> Result<bool, Error> {
        self.conditions
            .get(name)
            .copied()
            .ok_or_else(|| Error::Template(format!("unknown condition {name}")))
    }

    fn list(&self, value: &Value) -> Result<Vec<String>, Error> {
        match self.eval(value)? {
            Value::Sequence(items) => items.iter().map(|v| self.raw(v)).collect(),
            other => Err(Error::Template(format!("expected a list, got {other:?}"))),
        }
    }

    /// `${Name}`, `${Logical.Attribute}` and `${!Literal}` of `!Sub`.
    fn substitute(&self, text: &str, local: &BTreeMap<String, String>) -> Result<String, Error> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| Error::Template(format!("unclosed ${{ in !Sub {text:?}")))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = local.get(name) {
                out.push_str(v);
            } else if name.contains('.') {
                out.push_str(&self.attribute(name)?);
            } else {
                out.push_str(&self.reference(name)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// CloudFormation's dynamic references to Secrets Manager, resolved at deploy time.
    fn dynamic_references(&self, text: &str) -> Result<String, Error> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{resolve:") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| Error::Template(format!("unclosed dynamic reference in {text:?}")))?;
            let reference = &after[..end];
            let id = secret_id(reference).ok_or_else(|| {
                Error::Template(format!(
                    "dynamic reference {{{{{reference}}}}} is not supported by the local stack"
                ))
            })?;
            let value = self
                .secrets
                .get(id)
                .ok_or_else(|| Error::Template(format!("secret {id} is not provided by the local stack")))?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The secrets `text` references (`{{resolve:secretsmanager:ID...}}`), by ID.
pub fn secret_references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{resolve:") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        if let Some(id) = secret_id(&after[..end]) {
            out.push(id.to_owned());
        }
        rest = &after[end + 2..];
    }
    out
}

/// The secret ID of `resolve:secretsmanager:ID[:SecretString[:::]]` (the whole SecretString; a
/// json-key, version stage or version ID is not supported). ID is a name or an ARN, which has
/// colons of its own.
fn secret_id(reference: &str) -> Option<&str> {
    let rest = reference.strip_prefix("resolve:secretsmanager:")?;
    let (id, tail) = match rest.find(":SecretString") {
        Some(at) => (&rest[..at], &rest[at + ":SecretString".len()..]),
        None => (rest.trim_end_matches(':'), ""),
    };
    (!id.is_empty() && tail.chars().all(|c| c == ':')).then_some(id)
}

fn sequence<'v>(value: &'v Value, len: usize, what: &str) -> Result<&'v [Value], Error> {
    match value {
        Value::Sequence(items) if items.len() == len => Ok(items),
        _ => Err(Error::Template(format!("{what} needs a list of {len}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn context() -> Context {
        let mut c = Context::default();
        c.refs.insert("AWS::StackName".into(), "s".into());
        c.refs.insert("Key".into(), "".into());
        c.refs.insert("Bucket".into(), "b".into());
        c.attributes.insert("Cdn.DomainName".into(), "cdn.local".into());
        c.conditions.insert("HasKey".into(), false);
        c.secrets.insert("x/y".into(), "SECRET".into());
        c
    }

    fn eval(yaml: &str) -> Result<String, Error> {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        context().string(&v)
    }

    #[test]
    fn short_and_long_forms() {
        assert_eq!(eval("!Ref Bucket").unwrap(), "b");
        assert_eq!(eval("{Ref: Bucket}").unwrap(), "b");
        assert_eq!(
            eval("!Sub 'https://${Cdn.DomainName}/${AWS::StackName}-x${!Lit}'").unwrap(),
            "https://cdn.local/s-x${Lit}"
        );
        assert_eq!(
            eval("{'Fn::Sub': ['${A}-${Bucket}', {A: !Ref AWS::StackName}]}").unwrap(),
            "s-b"
        );
        assert_eq!(
            eval("!If [HasKey, !Ref Key, !Sub '{{resolve:secretsmanager:x/y:SecretString}}']").unwrap(),
            "SECRET"
        );
        assert_eq!(
            eval("!Join ['', [a, !Select [1, !Split ['/', 'p/q/r']]]]").unwrap(),
            "aq"
        );
        assert_eq!(eval("!GetAtt [Cdn, DomainName]").unwrap(), "cdn.local");
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(eval("!Ref Nope").unwrap_err().to_string().contains("Nope"));
        assert!(eval("!GetAtt Nope.Arn")
            .unwrap_err()
            .to_string()
            .contains("Nope.Arn"));
        assert!(eval("!ImportValue x")
            .unwrap_err()
            .to_string()
            .contains("ImportValue"));
        assert!(eval("'{{resolve:ssm:p}}'")
            .unwrap_err()
            .to_string()
            .contains("ssm"));
        assert!(eval("'{{resolve:secretsmanager:other:SecretString}}'").is_err());
        assert!(eval("'{{resolve:secretsmanager:x/y:SecretString:password}}'").is_err());
    }

    #[test]
    fn secret_reference_spellings() {
        assert_eq!(eval("!Sub '{{resolve:secretsmanager:x/y}}'").unwrap(), "SECRET");
        assert_eq!(eval("'{{resolve:secretsmanager:x/y::::}}'").unwrap(), "SECRET");
        assert_eq!(
            eval("'a{{resolve:secretsmanager:x/y:SecretString}}b'").unwrap(),
            "aSECRETb"
        );
        let arn = "arn:aws:secretsmanager:us-east-1:1:secret:k-AbCdEf";
        assert_eq!(
            secret_references(&format!(
                "{{{{resolve:secretsmanager:{arn}}}}} {{{{resolve:secretsmanager:x/y:SecretString}}}}"
            )),
            [arn, "x/y"]
        );
        assert!(secret_references("{{resolve:ssm:p}}").is_empty());
    }
}
