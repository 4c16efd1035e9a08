//! Reads the `#define`s of a C header and evaluates them: numbers (decimal,
//! hex, `u`/`l` suffixes), other defines, `+ - * <<` and parentheses, and
//! function-like macros applied to numbers. Anything else is an error, so a
//! define this reader cannot check fails the drift test instead of passing
//! unseen.

use std::collections::BTreeMap;

/// One `#define` with a value (include guards, which have none, are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Define {
    /// `#define NAME value`.
    Object { name: String, value: String },
    /// `#define NAME(a, b) body`.
    Function {
        name: String,
        params: Vec<String>,
        body: String,
    },
}

/// `header` as the preprocessor's first phases leave it: continuation
/// lines (`\` before the newline) joined, every comment (`/* … */`, also
/// over several lines, and `// …`) replaced by one space. Line breaks
/// inside a block comment are kept, so the lines after it stay lines.
pub(crate) fn logical_text(header: &str) -> String {
    let joined = header.replace("\\\r\n", "").replace("\\\n", "");
    let mut out = String::with_capacity(joined.len());
    let mut rest = joined.as_str();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            let close = after
                .find("*/")
                .unwrap_or_else(|| panic!("a /* comment without its */"));
            out.push(' ');
            out.extend(after[..close].chars().filter(|&c| c == '\n'));
            rest = &after[close + 2..];
        } else if let Some(after) = rest.strip_prefix("//") {
            out.push(' ');
            rest = &after[after.find('\n').unwrap_or(after.len())..];
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The defines of `header`, in order, comments stripped, every spelling
/// the preprocessor accepts read: spaces or tabs before and after the `#`
/// and after `define`, continuation lines, trailing comments. A directive
/// line that starts with `define` but is not followed by a name panics
/// (the drift test fails instead of skipping it).
pub(crate) fn defines(header: &str) -> Vec<Define> {
    let mut out = Vec::new();
    for line in logical_text(header).lines() {
        let Some(directive) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let directive = directive.trim_start();
        let Some(rest) = directive.strip_prefix("define") else {
            continue;
        };
        if !rest.starts_with([' ', '\t']) {
            assert!(
                !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'),
                "cannot read the directive `{line}`"
            );
            panic!("#define without a name: `{line}`");
        }
        let rest = rest.trim();
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = rest[..end].to_string();
        assert!(!name.is_empty(), "#define without a name: `{line}`");
        let after = &rest[end..];
        if let Some(params) = after.strip_prefix('(') {
            // Function-like: `(` right after the name, no space.
            let close = params
                .find(')')
                .unwrap_or_else(|| panic!("#define {name}: no ) after the parameters"));
            out.push(Define::Function {
                name,
                params: params[..close]
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .collect(),
                body: params[close + 1..].trim().to_string(),
            });
        } else if !after.trim().is_empty() {
            out.push(Define::Object {
                name,
                value: after.trim().to_string(),
            });
        }
    }
    out
}

/// An expression evaluator over the defines known so far.
pub(crate) struct Eval<'a> {
    toks: Vec<String>,
    pos: usize,
    known: &'a BTreeMap<String, u64>,
}

impl Eval<'_> {
    /// The value of `expr`, names looked up in `known`.
    pub(crate) fn run(expr: &str, known: &BTreeMap<String, u64>) -> Result<u64, String> {
        let mut toks = Vec::new();
        let b = expr.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i] as char;
            if c.is_whitespace() {
                i += 1;
            } else if c.is_ascii_alphanumeric() || c == '_' {
                let s = i;
                while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                toks.push(expr[s..i].to_string());
            } else if expr[i..].starts_with("<<") {
                toks.push("<<".into());
                i += 2;
            } else if "()+-*".contains(c) {
                toks.push(c.to_string());
                i += 1;
            } else {
                return Err(format!("cannot read `{c}` in `{expr}`"));
            }
        }
        let mut e = Eval {
            toks,
            pos: 0,
            known,
        };
        let v = e.shift()?;
        if e.pos != e.toks.len() {
            return Err(format!("trailing tokens in `{expr}`"));
        }
        Ok(v)
    }
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }
    fn shift(&mut self) -> Result<u64, String> {
        let mut v = self.add()?;
        while self.peek() == Some("<<") {
            self.pos += 1;
            v <<= self.add()?;
        }
        Ok(v)
    }
    fn add(&mut self) -> Result<u64, String> {
        let mut v = self.mul()?;
        loop {
            match self.peek() {
                Some("+") => {
                    self.pos += 1;
                    v += self.mul()?;
                }
                Some("-") => {
                    self.pos += 1;
                    v -= self.mul()?;
                }
                _ => return Ok(v),
            }
        }
    }
    fn mul(&mut self) -> Result<u64, String> {
        let mut v = self.atom()?;
        while self.peek() == Some("*") {
            self.pos += 1;
            v *= self.atom()?;
        }
        Ok(v)
    }
    fn atom(&mut self) -> Result<u64, String> {
        let t = self.peek().ok_or("unexpected end")?.to_string();
        self.pos += 1;
        if t == "(" {
            let v = self.shift()?;
            if self.peek() != Some(")") {
                return Err("missing )".into());
            }
            self.pos += 1;
            return Ok(v);
        }
        if t.as_bytes()[0].is_ascii_digit() {
            let n = t.trim_end_matches(['u', 'U', 'l', 'L']);
            return match n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16),
                None => n.parse(),
            }
            .map_err(|e| format!("bad number `{t}`: {e}"));
        }
        self.known
            .get(&t)
            .copied()
            .ok_or(format!("unknown name `{t}`"))
    }
}

/// What [`evaluate`] read from one header.
pub(crate) struct Evaluated {
    /// Object-like defines, in order.
    pub(crate) names: Vec<String>,
    /// Function-like defines: name, parameters, body.
    pub(crate) functions: Vec<(String, Vec<String>, String)>,
}

/// Evaluates every object-like define of `header` into `known` (defines of
/// headers evaluated before are visible) and collects its function-like
/// ones.
pub(crate) fn evaluate(header: &str, known: &mut BTreeMap<String, u64>) -> Evaluated {
    let mut out = Evaluated {
        names: Vec::new(),
        functions: Vec::new(),
    };
    for d in defines(header) {
        match d {
            Define::Object { name, value } => {
                let v = Eval::run(&value, known)
                    .unwrap_or_else(|e| panic!("#define {name} {value}: {e}"));
                assert!(
                    known.insert(name.clone(), v).is_none(),
                    "#define {name} twice"
                );
                out.names.push(name);
            }
            Define::Function { name, params, body } => out.functions.push((name, params, body)),
        }
    }
    out
}

/// The value of function-like macro `body` with `params` bound to `args`.
pub(crate) fn apply(
    params: &[String],
    body: &str,
    args: &[u64],
    known: &BTreeMap<String, u64>,
) -> Result<u64, String> {
    if params.len() != args.len() {
        return Err(format!(
            "{} parameters, {} arguments",
            params.len(),
            args.len()
        ));
    }
    let mut scope = known.clone();
    for (p, a) in params.iter().zip(args) {
        scope.insert(p.clone(), *a);
    }
    Eval::run(body, &scope)
}
