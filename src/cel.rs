//! CEL, the Kubernetes expression language, for the expressions users write in specs (the `http`
//! protocol's `spec.http`, and the templates to come).
//!
//! [`Expression::compile`] checks an expression once, with an error that says where and what is
//! wrong (`Syntax error at 1:15: …`, `undeclared reference to 'bdy' at 1:1 …`), so that the
//! admission webhook can refuse it at `kubectl apply` time. [`Expression::evaluate`] runs it over
//! JSON variables ([`Variables`]); [`to_cel`] and [`to_json`] convert between `serde_json` and
//! CEL values.
//!
//! The `cel` crate has no cost budget, so the cost is bounded by what is accepted: at most
//! [`MAX_EXPRESSION_BYTES`] of source, brackets nested at most [`MAX_NESTING`] deep, a syntax
//! tree at most [`MAX_DEPTH`] deep, and comprehensions (`all`, `exists`, `exists_one`, `map`,
//! `filter`) nested at most [`MAX_COMPREHENSION_NESTING`] deep, over inputs that are themselves
//! capped (an upstream body is read up to `--max-response-bytes`).
//!
//! Parsing and evaluating are recursive, and the parser's frames are large (a debug build needs
//! about 150 KiB of stack per level of parentheses): compiling runs on a thread of its own with
//! a large stack ([`COMPILE_STACK_BYTES`], reserved, not committed), and the depth limits keep
//! an evaluation within the stack of the thread that runs it.

use std::sync::{Arc, OnceLock};

use ::cel::common::ast::{EntryExpr, Expr, IdedExpr, SourceInfo};
use ::cel::objects::{Key, Map};
use ::cel::{Context, Env, Value};
use base64::Engine as _;

/// The longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// The deepest nesting of brackets (`(`, `[`, `{`) accepted, and the parser's recursion limit.
pub const MAX_NESTING: u16 = 32;
/// The deepest syntax tree accepted (`a + b + c` is 3 deep; each call, index, field selection
/// and comprehension adds a level): what bounds an evaluation's recursion.
pub const MAX_DEPTH: usize = 48;
/// The stack of the thread that compiles an expression.
pub const COMPILE_STACK_BYTES: usize = 64 * 1024 * 1024;
/// The deepest nesting of comprehensions accepted (`a.all(x, x.b.exists(y, …))` is 2).
pub const MAX_COMPREHENSION_NESTING: usize = 2;
/// The longest evaluation error message kept (CEL errors may quote whole values).
const MAX_ERROR_CHARS: usize = 300;

/// Identifiers that are not variables: type names and the namespaces of library functions.
const BUILTIN_IDENTIFIERS: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "duration",
    "dyn",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "timestamp",
    "type",
    "uint",
    "optional",
    "optional_type",
    "math",
    "base64",
    "strings",
    "google",
];

/// A compiled CEL expression, with its source.
#[derive(Debug)]
pub struct Expression {
    source: String,
    expr: IdedExpr,
}

/// Why an expression does not compile. Its text says where (`line:column`, 1-based) and what.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// Nothing but white space.
    #[error("the expression is empty")]
    Empty,
    /// Longer than [`MAX_EXPRESSION_BYTES`].
    #[error("the expression is {len} bytes long; at most {MAX_EXPRESSION_BYTES} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Not CEL (the parser's first complaint).
    #[error("{message} at {line}:{column}")]
    Invalid {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser says.
        message: String,
    },
    /// Not CEL: a syntax error.
    #[error("Syntax error at {line}:{column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser says.
        message: String,
    },
    /// A name that is not one of the variables.
    #[error("undeclared reference to '{name}' at {line}:{column} (the variables are {variables})")]
    Undeclared {
        /// The unknown name.
        name: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The variables the expression may use, comma-separated.
        variables: String,
    },
    /// Brackets nested deeper than [`MAX_NESTING`], or a tree deeper than [`MAX_DEPTH`].
    #[error("the expression nests {what} too deeply; simplify it")]
    TooDeep {
        /// What nests: `brackets` or `operations`.
        what: &'static str,
    },
    /// The compiler could not run (no thread could be started).
    #[error("the expression cannot be compiled now: {0}")]
    Unavailable(String),
    /// Comprehensions nested deeper than [`MAX_COMPREHENSION_NESTING`].
    #[error(
        "comprehensions (all, exists, exists_one, map, filter) are nested {depth} deep; at most {MAX_COMPREHENSION_NESTING} are allowed"
    )]
    TooComplex {
        /// How deep they nest.
        depth: usize,
    },
}

/// An expression of a spec that does not compile, named by its field path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {error}")]
pub struct FieldError {
    /// Where the expression is, e.g. `spec.http.succeeded`.
    pub field: String,
    /// What is wrong with it.
    pub error: CompileError,
}

/// Why an evaluation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A field or map key the expression reads is absent (`has()` tests for one).
    #[error("no such key: {0}")]
    Missing(String),
    /// The expression failed at run time (a missing key, a type mismatch, a division by zero…).
    #[error("{0}")]
    Failed(String),
    /// The expression gave a value of the wrong type.
    #[error("evaluates to a {got}, not a {want}")]
    Type {
        /// The type wanted.
        want: &'static str,
        /// The type it gave.
        got: String,
    },
    /// The value has no JSON form (a function, a type, a non-finite number…).
    #[error("the value cannot be written as JSON: {0}")]
    NotJson(String),
}

impl Expression {
    /// Compiles `source`, an expression over the variables named `variables` (and the variables
    /// its own comprehensions bind).
    pub fn compile(source: &str, variables: &[&str]) -> Result<Expression, CompileError> {
        if source.trim().is_empty() {
            return Err(CompileError::Empty);
        }
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err(CompileError::TooLong { len: source.len() });
        }
        if bracket_depth(source) > usize::from(MAX_NESTING) {
            return Err(CompileError::TooDeep { what: "brackets" });
        }
        let expr = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("cel-compile".into())
                .stack_size(COMPILE_STACK_BYTES)
                .spawn_scoped(scope, || parse(source, variables))
                .map_err(|e| CompileError::Unavailable(e.to_string()))?
                .join()
                .unwrap_or_else(|_| Err(CompileError::Unavailable("the compiler panicked".into())))
        })?;
        Ok(Expression {
            source: source.to_owned(),
            expr,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression over `variables`.
    pub fn evaluate(&self, variables: &Variables) -> Result<Value, EvalError> {
        Value::resolve(&self.expr, &variables.context).map_err(|e| match e {
            ::cel::ExecutionError::NoSuchKey(key) => EvalError::Missing(key.as_ref().clone()),
            other => EvalError::Failed(short(&other)),
        })
    }

    /// Evaluates to JSON.
    pub fn evaluate_json(&self, variables: &Variables) -> Result<serde_json::Value, EvalError> {
        to_json(&self.evaluate(variables)?)
    }

    /// Evaluates to a boolean.
    pub fn evaluate_bool(&self, variables: &Variables) -> Result<bool, EvalError> {
        match self.evaluate(variables)? {
            Value::Bool(b) => Ok(b),
            other => Err(type_error("bool", &other)),
        }
    }

    /// Evaluates to a number (an int, uint or double); `None` for `null`.
    pub fn evaluate_number(&self, variables: &Variables) -> Result<Option<f64>, EvalError> {
        match self.evaluate(variables)? {
            // Percentages and counts: the precision lost above 2^53 does not matter.
            Value::Int(i) => Ok(Some(i as f64)),
            Value::UInt(u) => Ok(Some(u as f64)),
            Value::Float(f) if f.is_finite() => Ok(Some(f)),
            Value::Null => Ok(None),
            other => Err(type_error("number", &other)),
        }
    }

    /// Evaluates to a string; `None` for `null`.
    pub fn evaluate_string(&self, variables: &Variables) -> Result<Option<String>, EvalError> {
        match self.evaluate(variables)? {
            Value::String(s) => Ok(Some(s.as_ref().clone())),
            Value::Null => Ok(None),
            other => Err(type_error("string", &other)),
        }
    }
}

/// The variables an expression is evaluated over.
pub struct Variables {
    context: Context<'static, 'static>,
}

impl std::fmt::Debug for Variables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variables").finish_non_exhaustive()
    }
}

impl Default for Variables {
    fn default() -> Self {
        Variables {
            context: Context::with_env(Arc::clone(env())),
        }
    }
}

impl Variables {
    /// No variables.
    pub fn new() -> Self {
        Variables::default()
    }

    /// Binds `name` to `value`.
    pub fn bind(&mut self, name: &str, value: Value) -> &mut Self {
        self.context.add_variable_from_value(name, value);
        self
    }

    /// Binds `name` to a JSON value.
    pub fn bind_json(&mut self, name: &str, value: &serde_json::Value) -> &mut Self {
        self.bind(name, to_cel(value))
    }
}

/// A JSON value as a CEL value: integers are `int` (or `uint` above `i64::MAX`), other numbers
/// `double`, objects maps with string keys.
pub fn to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(to_cel).collect()))
        }
        serde_json::Value::Object(fields) => Value::Map(Map {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

/// A CEL value as JSON: bytes become base64, timestamps RFC 3339, durations `"1.5s"`, map keys
/// strings; functions, types, optionals and non-finite numbers have no JSON form.
pub fn to_json(value: &Value) -> Result<serde_json::Value, EvalError> {
    Ok(match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::UInt(u) => serde_json::Value::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .ok_or_else(|| EvalError::NotJson(format!("{f} is not a finite number")))?,
        Value::String(s) => serde_json::Value::String(s.as_ref().clone()),
        Value::Bytes(b) => {
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_ref()))
        }
        Value::List(items) => {
            serde_json::Value::Array(items.iter().map(to_json).collect::<Result<Vec<_>, _>>()?)
        }
        Value::Map(map) => {
            let mut fields = serde_json::Map::new();
            for (key, v) in map.map.iter() {
                let name = match key {
                    Key::String(s) => s.as_ref().clone(),
                    Key::Int(i) => i.to_string(),
                    Key::Uint(u) => u.to_string(),
                    Key::Bool(b) => b.to_string(),
                };
                fields.insert(name, to_json(v)?);
            }
            serde_json::Value::Object(fields)
        }
        Value::Timestamp(t) => serde_json::Value::String(t.to_rfc3339()),
        Value::Duration(d) => {
            let seconds = d.num_milliseconds() as f64 / 1000.0;
            serde_json::Value::String(format!("{seconds}s"))
        }
        other => return Err(EvalError::NotJson(format!("a {}", other.type_of()))),
    })
}

/// The environment every expression is compiled and evaluated in: the standard library plus the
/// `strings` and `lists` extensions (as in Kubernetes).
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // Declaring the extensions into a fresh environment cannot conflict; if it ever did, the
        // standard library alone still works.
        let _ = env.add_extension(::cel::extensions::strings);
        let _ = env.add_extension(::cel::extensions::lists);
        Arc::new(env)
    })
}

fn type_error(want: &'static str, got: &Value) -> EvalError {
    EvalError::Type {
        want,
        got: got.type_of().to_string(),
    }
}

/// An evaluation error, cut to [`MAX_ERROR_CHARS`].
fn short(error: &::cel::ExecutionError) -> String {
    let text = error.to_string();
    if text.chars().count() <= MAX_ERROR_CHARS {
        return text;
    }
    let cut: String = text.chars().take(MAX_ERROR_CHARS).collect();
    format!("{cut}…")
}

/// Parses and checks `source` (on a thread with a large stack).
fn parse(source: &str, variables: &[&str]) -> Result<IdedExpr, CompileError> {
    let parser = env().parser().max_recursion_depth(MAX_NESTING);
    let (expr, info) = parser
        .parse_with_source_info(source)
        .map_err(|errors| first_error(&errors))?;
    let mut check = Check {
        info: &info,
        variables,
        bound: Vec::new(),
        level: 0,
        deepest_level: 0,
        comprehensions: 0,
        deepest_comprehension: 0,
        undeclared: None,
    };
    check.walk(&expr);
    if let Some(error) = check.undeclared {
        return Err(error);
    }
    if check.deepest_level > MAX_DEPTH {
        return Err(CompileError::TooDeep { what: "operations" });
    }
    if check.deepest_comprehension > MAX_COMPREHENSION_NESTING {
        return Err(CompileError::TooComplex {
            depth: check.deepest_comprehension,
        });
    }
    Ok(expr)
}

/// How deep `(`, `[` and `{` nest in `source`, outside string literals (a lexical estimate:
/// the parser has the last word).
fn bracket_depth(source: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    deepest
}

/// The parser's first error, with its position.
fn first_error(errors: &::cel::ParseErrors) -> CompileError {
    // The parser's own syntax errors say the most; internal ones (`Incomplete …`) the least.
    let error = errors
        .errors
        .iter()
        .find(|e| e.msg.starts_with("Syntax error: "))
        .or_else(|| errors.errors.iter().find(|e| e.pos != (0, 0)))
        .or_else(|| errors.errors.first());
    let Some(error) = error else {
        return CompileError::Invalid {
            line: 1,
            column: 1,
            message: "the expression could not be parsed".into(),
        };
    };
    // The parser gives 1-based lines and columns; 0:0 when it could not say.
    let line = usize::try_from(error.pos.0).unwrap_or(0).max(1);
    let column = usize::try_from(error.pos.1).unwrap_or(0).max(1);
    match error.msg.strip_prefix("Syntax error: ") {
        Some(message) => CompileError::Syntax {
            line,
            column,
            message: message.to_owned(),
        },
        None => CompileError::Invalid {
            line,
            column,
            message: error.msg.clone(),
        },
    }
}

/// Walks a parsed expression: finds the first undeclared identifier, the tree's depth and the
/// comprehensions' nesting.
struct Check<'a> {
    info: &'a SourceInfo,
    variables: &'a [&'a str],
    /// Variables bound by the enclosing comprehensions.
    bound: Vec<&'a str>,
    level: usize,
    deepest_level: usize,
    comprehensions: usize,
    deepest_comprehension: usize,
    undeclared: Option<CompileError>,
}

impl<'a> Check<'a> {
    fn walk(&mut self, e: &'a IdedExpr) {
        // Deeper than the limit is refused anyway: no need to look further down.
        if self.undeclared.is_some() || self.level > MAX_DEPTH {
            return;
        }
        self.level += 1;
        self.deepest_level = self.deepest_level.max(self.level);
        self.node(e);
        self.level -= 1;
    }

    fn node(&mut self, e: &'a IdedExpr) {
        match &e.expr {
            Expr::Unspecified | Expr::Literal(_) => {}
            Expr::Ident(name) => self.ident(e.id, name),
            Expr::Select(select) => self.walk(&select.operand),
            Expr::Call(call) => {
                // A namespace such as `math` in `math.least(…)` is a builtin identifier.
                if let Some(target) = &call.target {
                    self.walk(target);
                }
                for arg in &call.args {
                    self.walk(arg);
                }
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.walk(element);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(m) => {
                            self.walk(&m.key);
                            self.walk(&m.value);
                        }
                        EntryExpr::StructField(f) => self.walk(&f.value),
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(m) => {
                            self.walk(&m.key);
                            self.walk(&m.value);
                        }
                        EntryExpr::StructField(f) => self.walk(&f.value),
                    }
                }
            }
            Expr::Comprehension(c) => {
                self.walk(&c.iter_range);
                self.walk(&c.accu_init);
                self.comprehensions += 1;
                self.deepest_comprehension = self.deepest_comprehension.max(self.comprehensions);
                let before = self.bound.len();
                self.bound.push(&c.iter_var);
                if let Some(second) = &c.iter_var2 {
                    self.bound.push(second);
                }
                self.bound.push(&c.accu_var);
                self.walk(&c.loop_cond);
                self.walk(&c.loop_step);
                self.walk(&c.result);
                self.bound.truncate(before);
                self.comprehensions -= 1;
            }
        }
    }

    fn is_known(&self, name: &str) -> bool {
        self.variables.contains(&name)
            || self.bound.contains(&name)
            || BUILTIN_IDENTIFIERS.contains(&name)
            || name.starts_with('@')
    }

    fn ident(&mut self, id: u64, name: &str) {
        if self.is_known(name) {
            return;
        }
        let (line, column) = self.position(id);
        self.undeclared = Some(CompileError::Undeclared {
            name: name.to_owned(),
            line,
            column,
            variables: self.variables.join(", "),
        });
    }

    /// The 1-based line and column of node `id`.
    fn position(&self, id: u64) -> (usize, usize) {
        let Some((start, _)) = self.info.offset_for(id) else {
            return (1, 1);
        };
        let start = usize::try_from(start).unwrap_or(0);
        let before = self.info.source.get(..start).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VARS: &[&str] = &["status", "headers", "body"];

    fn vars(body: serde_json::Value) -> Variables {
        let mut v = Variables::new();
        v.bind_json("status", &json!(200))
            .bind_json("headers", &json!({"location": "/jobs/1"}))
            .bind_json("body", &body);
        v
    }

    fn eval(source: &str, body: serde_json::Value) -> Result<serde_json::Value, EvalError> {
        Expression::compile(source, VARS)
            .unwrap_or_else(|e| panic!("{source}: {e}"))
            .evaluate_json(&vars(body))
    }

    #[test]
    fn syntax_errors_say_where_and_what() {
        let e = Expression::compile("body.status ==", VARS).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("Syntax error at 1:15: "), "{text}");
        let e = Expression::compile("body.status == 'done'\n  && )", VARS).unwrap_err();
        assert!(e.to_string().starts_with("Syntax error at 2:"), "{e}");
        assert_eq!(
            Expression::compile("  ", VARS).unwrap_err(),
            CompileError::Empty
        );
        let long = format!("{} == 1", "1 + ".repeat(1100));
        assert!(matches!(
            Expression::compile(&long, VARS),
            Err(CompileError::TooLong { .. })
        ));
        // Nesting is capped before parsing (the parser's recursion would overflow the stack).
        for n in [33, 200, 2000] {
            let parens = format!("{}1{}", "(".repeat(n), ")".repeat(n));
            assert_eq!(
                Expression::compile(&parens, VARS).unwrap_err(),
                CompileError::TooDeep { what: "brackets" }
            );
        }
        let lists = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        assert!(Expression::compile(&lists, VARS).is_err());
        // Brackets inside strings do not count.
        let quoted = format!(
            "body.s == '{}' && body.t != \"{}\"",
            "(".repeat(50),
            "[".repeat(50)
        );
        Expression::compile(&quoted, VARS).unwrap();
        // Operator chains, calls and selections: the tree's depth is capped.
        for deep in [
            format!("1{}", " + 1".repeat(60)),
            format!("body{}", ".a".repeat(60)),
            format!("'a'{}", ".size().string()".repeat(40)),
        ] {
            assert_eq!(
                Expression::compile(&deep, VARS).unwrap_err(),
                CompileError::TooDeep { what: "operations" },
                "{deep}"
            );
        }
        let fine = format!("body.n{}", " + 1".repeat(20));
        assert_eq!(eval(&fine, json!({"n": 1})), Ok(json!(21)));
    }

    #[test]
    fn the_worst_shapes_within_the_limits_do_not_overflow_the_stack() {
        // Every shape of recursion the grammar has, as long or as deep as the limits allow.
        let at_limit = usize::from(MAX_NESTING);
        let fill = |unit: &str, head: &str| {
            let n = (MAX_EXPRESSION_BYTES - head.len()) / unit.len();
            format!("{head}{}", unit.repeat(n))
        };
        let shapes = [
            format!("{}1{}", "(".repeat(at_limit), ")".repeat(at_limit)),
            format!("{}1{}", "[".repeat(at_limit), "]".repeat(at_limit)),
            format!("{}1{}", "size(".repeat(at_limit), ")".repeat(at_limit)),
            format!("{}1{}", "{'a': ".repeat(at_limit), "}".repeat(at_limit)),
            fill("+1", "1"),
            fill(".a", "body"),
            fill("[0]", "body"),
            fill(".size()", "'a'"),
            fill("!", "").replace("!!", "!") + "true",
            fill("-", "") + "1",
            fill(" ? 1 : true", "true"),
            fill(" && true", "true"),
            fill(" || x", "false"),
            fill(" < 2", "1"),
        ];
        for source in shapes {
            let source = &source[..source.len().min(MAX_EXPRESSION_BYTES)];
            // Refused or not, it returns.
            let _ = Expression::compile(source, VARS);
        }
    }

    #[test]
    fn unknown_variables_are_refused_with_their_position() {
        let e = Expression::compile("status == 200 && bdy.done", VARS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "undeclared reference to 'bdy' at 1:18 (the variables are status, headers, body)"
        );
        // Comprehension variables, type names and namespaces are not variables.
        for ok in [
            "body.items.all(i, i.done)",
            "body.items.map(i, i.id).exists(x, x == 'a')",
            "type(body) == map",
            "body.items.exists(x, x.tags.all(t, t != ''))",
            "'Done'.lowerAscii() == 'done'",
            "has(body.status) && body.status == 'done'",
        ] {
            Expression::compile(ok, VARS).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let e = Expression::compile("body.items.all(i, j.done)", VARS).unwrap_err();
        assert!(e.to_string().contains("'j'"), "{e}");
    }

    #[test]
    fn comprehension_nesting_is_capped() {
        let three = "body.a.all(x, x.b.all(y, y.c.all(z, z)))";
        assert_eq!(
            Expression::compile(three, VARS).unwrap_err(),
            CompileError::TooComplex { depth: 3 }
        );
        // Side by side is not nested.
        Expression::compile("body.a.all(x, x) && body.b.exists(y, y)", VARS).unwrap();
    }

    #[test]
    fn evaluates_over_json() {
        let body = json!({"status": "done", "percent": 40, "ratio": 0.5,
            "links": {"self": "/jobs/1"}, "items": [{"done": true}, {"done": false}]});
        assert_eq!(eval("body.status == 'done'", body.clone()), Ok(json!(true)));
        assert_eq!(eval("body.percent + 2", body.clone()), Ok(json!(42)));
        assert_eq!(eval("body.ratio * 100.0", body.clone()), Ok(json!(50.0)));
        assert_eq!(eval("body.links.self", body.clone()), Ok(json!("/jobs/1")));
        assert_eq!(
            eval("headers['location']", body.clone()),
            Ok(json!("/jobs/1"))
        );
        assert_eq!(
            eval("status >= 200 && status < 300", body.clone()),
            Ok(json!(true))
        );
        assert_eq!(
            eval("body.items.filter(i, i.done).size()", body.clone()),
            Ok(json!(1))
        );
        assert_eq!(
            eval(
                "{'id': body.links.self, 'n': [1, 2u, 2.5, null]}",
                body.clone()
            ),
            Ok(json!({"id": "/jobs/1", "n": [1, 2, 2.5, null]}))
        );
        assert_eq!(eval("body", body.clone()), Ok(body.clone()));
    }

    #[test]
    fn evaluation_errors_are_values_not_panics() {
        let e = eval("body.links.status", json!({"links": {}})).unwrap_err();
        assert!(e.to_string().contains("status"), "{e}");
        assert!(eval("body.n / 0", json!({"n": 1})).is_err());
        assert!(eval("body.s + 1", json!({"s": "x"})).is_err());
        let expr = Expression::compile("body.status", VARS).unwrap();
        assert_eq!(
            expr.evaluate_bool(&vars(json!({"status": "done"}))),
            Err(EvalError::Type {
                want: "bool",
                got: "string".into()
            })
        );
        assert_eq!(
            expr.evaluate_string(&vars(json!({"status": null}))),
            Ok(None)
        );
        let n = Expression::compile("body.p", VARS).unwrap();
        assert_eq!(n.evaluate_number(&vars(json!({"p": 7}))), Ok(Some(7.0)));
        assert_eq!(n.evaluate_number(&vars(json!({"p": 7.5}))), Ok(Some(7.5)));
        assert!(n.evaluate_number(&vars(json!({"p": "7"}))).is_err());
        // A huge value in an error message is cut.
        let big = json!({"s": "x".repeat(10_000)});
        let e = eval("body.s + 1", big).unwrap_err();
        assert!(e.to_string().chars().count() <= MAX_ERROR_CHARS + 1, "{e}");
    }

    #[test]
    fn conversions_round_trip() {
        let values = [
            json!(null),
            json!(true),
            json!(-3),
            json!(u64::MAX),
            json!(1.25),
            json!("s"),
            json!([1, "a", [true]]),
            json!({"a": {"b": [1, 2]}, "c": null}),
        ];
        for v in values {
            assert_eq!(to_json(&to_cel(&v)), Ok(v.clone()), "{v}");
        }
        assert!(to_json(&Value::Float(f64::NAN)).is_err());
        assert_eq!(
            to_json(&Value::Bytes(Arc::new(b"hi".to_vec()))),
            Ok(json!("aGk="))
        );
    }

    proptest::proptest! {
        #[test]
        fn compiling_never_panics(source in ".{0,200}") {
            let _ = Expression::compile(&source, VARS);
        }

        #[test]
        fn compiling_cel_like_text_never_panics(
            source in "[a-z. ()\\[\\]'\"=!<>&|+*/%?:,0-9{}-]{0,120}"
        ) {
            if let Ok(expr) = Expression::compile(&source, VARS) {
                let _ = expr.evaluate(&vars(json!({"a": [1, 2], "b": {"c": "d"}})));
            }
        }
    }
}
