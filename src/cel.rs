//! CEL, the Kubernetes expression language, for the expressions users write in specs (the `http`
//! protocol's `spec.http`, and the templates to come).
//!
//! [`Expression::compile`] checks an expression once, with an error that says where and what is
//! wrong (`Syntax error at 1:15: …`, `undeclared reference to 'bdy' at 1:1 …`), so that the
//! admission webhook can refuse it at `kubectl apply` time. [`Expression::evaluate`] runs it over
//! JSON variables ([`Variables`]); [`to_cel`] and [`to_json`] convert between `serde_json` and
//! CEL values.
//!
//! What is compiled is bounded: at most [`MAX_EXPRESSION_BYTES`] of source, brackets nested at
//! most [`MAX_NESTING`] deep, a syntax tree at most [`MAX_DEPTH`] deep, and comprehensions
//! (`all`, `exists`, `exists_one`, `map`, `filter`) nested at most
//! [`MAX_COMPREHENSION_NESTING`] deep.
//!
//! What is evaluated has a budget, as the `cel` crate has none and a short expression can do
//! unbounded work (`l.map(x, l)` builds |l|² values). [`Variables`] measures each value bound
//! (values and bytes of text), and before evaluating, [`Expression::evaluate`] (and so every
//! `evaluate_*`) estimates from the syntax tree and those sizes an upper bound of the work and
//! of the largest value built. Over [`MAX_COST`] or [`MAX_RESULT`], the expression is not run:
//! [`EvalError::OverBudget`] says which bound and by how much. The size of the value returned
//! is checked again. The estimate is conservative: a comprehension runs once for each element
//! of its range, each at most as large as the largest (or, where that is unknown, all together
//! as large as the range); a part of a variable (`body.items`) is measured; `replace` may grow
//! a text by the replacement for each byte; a regular expression's cost is sized from its
//! literal pattern (a pattern that is not a literal is refused). With these budgets, an
//! accepted evaluation takes at most about 60 ms in a debug build.
//!
//! Parsing and evaluating are recursive, and the parser's frames are large (a debug build needs
//! about 150 KiB of stack per level of parentheses): compiling runs on a thread of its own with
//! a large stack ([`COMPILE_STACK_BYTES`], reserved, not committed), and the depth limits keep
//! an evaluation within the stack of the thread that runs it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use ::cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, SourceInfo};
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
/// The most work one evaluation may do, in cost units: about one step of the interpreter (one
/// node of the expression evaluated, one value copied, 64 bytes of text copied or 4 bytes of
/// text processed a character at a time). A debug build does 7 units a microsecond or more: the
/// costliest expressions accepted take up to about 60 ms there.
pub const MAX_COST: f64 = 450_000.0;
/// The largest value one evaluation may build or return, in values (each number, string, list,
/// map and map key) plus bytes of text: a JSON document of `MAX_RESULT` bytes fits.
pub const MAX_RESULT: f64 = 1_048_576.0;

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
    /// The evaluation would cost more than [`MAX_COST`] or build a value larger than
    /// [`MAX_RESULT`] (it is not run), or built one larger than [`MAX_RESULT`].
    #[error("{0}")]
    OverBudget(String),
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

    /// Evaluates the expression over `variables`, unless its estimate over their sizes is over
    /// the budget ([`MAX_COST`], [`MAX_RESULT`]): then it is not run.
    pub fn evaluate(&self, variables: &Variables) -> Result<Value, EvalError> {
        within_budget(&self.expr, variables)?;
        let value = Value::resolve(&self.expr, &variables.context).map_err(|e| match e {
            ::cel::ExecutionError::NoSuchKey(key) => EvalError::Missing(key.as_ref().clone()),
            other => EvalError::Failed(short(&other)),
        })?;
        // Defence in depth: the estimate is an upper bound, so this should never trip.
        let mut walk = MAX_RESULT as u64;
        match size_of(&value, &mut walk) {
            Some(size) if size.total() <= MAX_RESULT => Ok(value),
            _ => Err(EvalError::OverBudget(format!(
                "built a value larger than the budget of {MAX_RESULT:.0} values and bytes of text"
            ))),
        }
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

/// The variables an expression is evaluated over, with their sizes (for the budget).
pub struct Variables {
    context: Context<'static, 'static>,
    bound: Vec<Bound>,
}

/// A bound variable: its value (sharing the caller's, as CEL values are reference-counted) and
/// its shape.
struct Bound {
    name: String,
    value: Value,
    shape: Shape,
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
            bound: Vec::new(),
        }
    }
}

impl Variables {
    /// No variables.
    pub fn new() -> Self {
        Variables::default()
    }

    /// Binds `name` to `value`, and measures it.
    pub fn bind(&mut self, name: &str, value: Value) -> &mut Self {
        let mut unlimited = u64::MAX;
        let shape = shape_of(&value, &mut unlimited).unwrap_or(Shape::UNBOUNDED);
        self.bound.retain(|b| b.name != name);
        self.bound.push(Bound {
            name: name.to_owned(),
            value: value.clone(),
            shape,
        });
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

// The budget: a static estimate of an evaluation's cost and result size over the actual sizes of
// the variables, checked before evaluating.
//
// The estimate is an upper bound built from sizes: a `Sz` counts values and bytes of text. Each
// rule is monotone in the sizes it is given and convex in them (sums, products, maxima, and
// differences floored at zero), which is what makes the comprehension rule sound: for elements
// of sizes s₁…sₙ that add up to at most S, the cost of the iterations, Σ f(sᵢ), is at most
// n·f(0) + f(S) when f is convex (then f(s) − f(0) is superadditive). The lesser of two bounds
// (not convex) is taken only where nothing depends on such a symbolic size.

/// Bytes of text copied for one cost unit (a value copied is one unit).
const COPY_BYTES: f64 = 64.0;
/// Bytes of text processed a character at a time for one cost unit.
const SCAN_BYTES: f64 = 4.0;
/// The interpreter's own work per iteration of a comprehension (binding the element).
const ITERATION: f64 = 3.0;
/// The interpreter's own work to look a name up in one scope.
const LOOKUP: f64 = 3.0;
/// The interpreter's own work to call a function (finding its overload, collecting the
/// arguments); an operator is one unit.
const CALL: f64 = 5.0;
/// The longest text one value formats to (`string(1e308)` writes out 309 digits).
const FORMAT_BYTES: f64 = 330.0;
/// The longest text one `%` clause of `format` writes (`%.100f` of `1e308`).
const CLAUSE_BYTES: f64 = 420.0;
/// Cost units per state of a regular expression's automaton, to compile it.
const REGEX_COMPILE: f64 = 8.0;
/// Cost units per state of a regular expression's automaton and byte of text matched (the
/// automaton may track every state at every byte).
const REGEX_MATCH: f64 = 0.7;
/// The most elements `lists.range(n)` builds.
const MAX_RANGE: f64 = 1_000_000.0;
/// The most values walked to measure parts of the variables during one estimate; past it, a
/// part is taken to be as large as what holds it.
const WALK_BUDGET: u64 = 1 << 15;

/// A size: values (each number, string, list, map and map key) and bytes of text.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sz {
    values: f64,
    bytes: f64,
}

impl Sz {
    const ZERO: Sz = Sz {
        values: 0.0,
        bytes: 0.0,
    };
    const ONE: Sz = Sz {
        values: 1.0,
        bytes: 0.0,
    };

    fn text(bytes: f64) -> Sz {
        Sz { values: 1.0, bytes }
    }

    /// A size known only by its total: as many values, and as many bytes.
    fn whole(total: f64) -> Sz {
        Sz {
            values: total,
            bytes: total,
        }
    }

    /// Values plus bytes: what [`MAX_RESULT`] bounds.
    fn total(self) -> f64 {
        self.values + self.bytes
    }

    /// The cost of copying a value this large.
    fn copy(self) -> f64 {
        self.values + self.bytes / COPY_BYTES
    }

    fn plus(self, other: Sz) -> Sz {
        Sz {
            values: self.values + other.values,
            bytes: self.bytes + other.bytes,
        }
    }

    fn times(self, n: f64) -> Sz {
        Sz {
            values: mul(self.values, n),
            bytes: mul(self.bytes, n),
        }
    }

    fn max(self, other: Sz) -> Sz {
        Sz {
            values: self.values.max(other.values),
            bytes: self.bytes.max(other.bytes),
        }
    }

    fn min(self, other: Sz) -> Sz {
        Sz {
            values: least(self.values, other.values),
            bytes: least(self.bytes, other.bytes),
        }
    }

    /// Not larger than `other` (allowing for rounding).
    fn within(self, other: Sz) -> bool {
        self.values <= other.values * (1.0 + 1e-9) + 1e-9
            && self.bytes <= other.bytes * (1.0 + 1e-9) + 1e-9
    }
}

/// `a × b`, where zero times anything (infinity included) is zero.
fn mul(a: f64, b: f64) -> f64 {
    if a == 0.0 || b == 0.0 { 0.0 } else { a * b }
}

/// The lesser of two bounds (a NaN bound is no bound).
fn least(a: f64, b: f64) -> f64 {
    if a.is_nan() {
        b
    } else if b.is_nan() {
        a
    } else {
        a.min(b)
    }
}

/// What is known of a value's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A number, bool, null, timestamp, duration or type: one value.
    Scalar,
    /// A string or bytes.
    Text,
    /// Anything.
    Any,
}

/// A value's size, how many elements a comprehension over it iterates (list elements or map
/// keys) and how large each is at most, and how large a part found by index is at most (a list
/// element or a map value).
#[derive(Clone, Copy, Debug)]
struct Shape {
    size: Sz,
    len: f64,
    item: Sz,
    part: Sz,
    kind: Kind,
}

impl Shape {
    /// A value that could not be measured.
    const UNBOUNDED: Shape = Shape {
        size: Sz {
            values: f64::INFINITY,
            bytes: f64::INFINITY,
        },
        len: f64::INFINITY,
        item: Sz {
            values: f64::INFINITY,
            bytes: f64::INFINITY,
        },
        part: Sz {
            values: f64::INFINITY,
            bytes: f64::INFINITY,
        },
        kind: Kind::Any,
    };
}

fn kind_of(value: &Value) -> Kind {
    match value {
        Value::String(_) | Value::Bytes(_) => Kind::Text,
        Value::List(_) | Value::Map(_) | Value::Opaque(_) | Value::Struct(_) => Kind::Any,
        _ => Kind::Scalar,
    }
}

/// A map key counts as three values: copying a map hashes its keys. (Written as JSON, a key
/// takes three bytes more than its text: a JSON text of `MAX_RESULT` bytes is within it.)
fn key_size(key: &Key) -> Sz {
    let bytes = match key {
        Key::String(s) => s.len() as f64,
        _ => 0.0,
    };
    Sz { values: 3.0, bytes }
}

/// The size of `value`, walking at most `budget` values (`None` past it).
fn size_of(value: &Value, budget: &mut u64) -> Option<Sz> {
    let mut size = Sz::ZERO;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        *budget = budget.checked_sub(1)?;
        size.values += 1.0;
        match v {
            Value::String(s) => size.bytes += s.len() as f64,
            Value::Bytes(b) => size.bytes += b.len() as f64,
            Value::List(items) => stack.extend(items.iter()),
            Value::Map(map) => {
                for (key, v) in map.map.iter() {
                    size = size.plus(key_size(key));
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    Some(size)
}

/// The shape of `value`, walking at most `budget` values (`None` past it).
fn shape_of(value: &Value, budget: &mut u64) -> Option<Shape> {
    let mut size = Sz::ONE;
    let mut item = Sz::ZERO;
    match value {
        Value::List(items) => {
            for v in items.iter() {
                let s = size_of(v, budget)?;
                size = size.plus(s);
                item = item.max(s);
            }
            Some(Shape {
                size,
                len: items.len() as f64,
                item,
                part: item,
                kind: Kind::Any,
            })
        }
        Value::Map(map) => {
            let mut part = Sz::ZERO;
            for (key, v) in map.map.iter() {
                let k = key_size(key);
                let v = size_of(v, budget)?;
                size = size.plus(k).plus(v);
                item = item.max(k);
                part = part.max(v);
            }
            Some(Shape {
                size,
                len: map.map.len() as f64,
                item,
                part,
                kind: Kind::Any,
            })
        }
        other => {
            let size = size_of(other, budget)?;
            Some(Shape {
                size,
                len: size.values,
                item: size,
                part: size,
                kind: kind_of(other),
            })
        }
    }
}

/// The estimate of an expression: the cost of evaluating it, and the shape of its value (and
/// the value itself when it is a part of a variable).
#[derive(Clone, Copy, Debug)]
struct Est<'a> {
    cost: f64,
    shape: Shape,
    known: Option<&'a Value>,
}

impl<'a> Est<'a> {
    fn scalar(cost: f64) -> Self {
        Est {
            cost,
            shape: Shape {
                size: Sz::ONE,
                len: 1.0,
                item: Sz::ONE,
                part: Sz::ONE,
                kind: Kind::Scalar,
            },
            known: None,
        }
    }

    fn text(cost: f64, bytes: f64) -> Self {
        let size = Sz::text(bytes);
        Est {
            cost,
            shape: Shape {
                size,
                len: 1.0,
                item: size,
                part: size,
                kind: Kind::Text,
            },
            known: None,
        }
    }

    /// Any value of at most `size`.
    fn sized(cost: f64, size: Sz) -> Self {
        Est {
            cost,
            shape: Shape {
                size,
                len: size.values,
                item: size,
                part: size,
                kind: Kind::Any,
            },
            known: None,
        }
    }

    /// A list of `len` elements of at most `item` each, `size` in all.
    fn collection(cost: f64, size: Sz, len: f64, item: Sz) -> Self {
        Est {
            cost,
            shape: Shape {
                size,
                len,
                item,
                part: item,
                kind: Kind::Any,
            },
            known: None,
        }
    }

    fn size(&self) -> Sz {
        self.shape.size
    }

    fn with_cost(self, cost: f64) -> Self {
        Est { cost, ..self }
    }

    /// The lesser of two bounds of the same expression.
    fn least(self, other: Self) -> Self {
        Est {
            cost: least(self.cost, other.cost),
            shape: Shape {
                size: self.shape.size.min(other.shape.size),
                len: least(self.shape.len, other.shape.len),
                item: self.shape.item.min(other.shape.item),
                part: self.shape.part.min(other.shape.part),
                kind: if self.shape.kind == other.shape.kind {
                    self.shape.kind
                } else {
                    Kind::Any
                },
            },
            known: None,
        }
    }
}

/// The cost of processing `bytes` of text a character at a time.
fn scan(bytes: f64) -> f64 {
    bytes / SCAN_BYTES
}

/// `n·log₂(n)`-ish, convex: the comparisons of a sort.
fn sorting(n: f64) -> f64 {
    mul(n, (n + 2.0).log2())
}

/// The estimated cost of evaluating `expr` over `variables` and size of its value, and the
/// estimator (which can explain the cost).
fn estimate<'a>(expr: &'a IdedExpr, variables: &'a Variables) -> (f64, Sz, Estimator<'a>) {
    let mut estimator = Estimator {
        bound: &variables.bound,
        scopes: Vec::new(),
        depth: 0,
        symbolic: 0,
        walk: WALK_BUDGET,
        measured: HashMap::new(),
        costliest: None,
        unbounded: None,
    };
    let est = estimator.walk(expr);
    // The interpreter converts the result to a `Value`, and `evaluate_json` to JSON.
    let cost = est.cost + 2.0 * est.size().copy();
    (cost, est.size(), estimator)
}

/// Checks the estimate of `expr` over `variables` against the budget.
fn within_budget(expr: &IdedExpr, variables: &Variables) -> Result<(), EvalError> {
    let (cost, size, estimator) = estimate(expr, variables);
    // A NaN estimate is over the budget too.
    if cost.is_nan() || cost > MAX_COST {
        return Err(EvalError::OverBudget(estimator.explain(cost)));
    }
    let size = size.total();
    if size.is_nan() || size > MAX_RESULT {
        return Err(EvalError::OverBudget(format!(
            "would build a value of about {} values and bytes of text, over the budget of {MAX_RESULT:.0}",
            approx(size)
        )));
    }
    Ok(())
}

/// `x` for a message: `12345`, `1.6e9`.
fn approx(x: f64) -> String {
    if x < 100_000.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1e}")
    }
}

/// What a comprehension is bounded by: each element at most `item`, or all of them together
/// at most `total` (the elements' sizes are then symbolic).
#[derive(Clone, Copy)]
enum Elements {
    EachAtMost(Sz),
    AllTogether(Sz),
}

/// The iterations and the result of a comprehension, estimated one way.
struct Pass<'a> {
    iterations: f64,
    result: Est<'a>,
}

/// Walks a compiled expression, estimating each node from its operands'.
struct Estimator<'a> {
    bound: &'a [Bound],
    /// The variables of the enclosing comprehensions, innermost last.
    scopes: Vec<(&'a str, Est<'a>, usize)>,
    /// How many comprehensions enclose the node being estimated (each is a scope the
    /// interpreter searches for a name).
    depth: usize,
    /// How many enclosing comprehensions are being estimated with symbolic element sizes:
    /// inside them, every rule must stay convex, so a comprehension picks its bound by the
    /// expression's structure, not by which bound is lower.
    symbolic: usize,
    /// Values left to walk measuring parts of the variables.
    walk: u64,
    /// The lists and maps of the variables measured so far, by address.
    measured: HashMap<usize, Shape>,
    /// The costliest comprehension estimated with actual sizes: elements, cost of iterating.
    costliest: Option<(f64, f64)>,
    /// Why the cost could not be bounded, if it could not.
    unbounded: Option<&'static str>,
}

impl<'a> Estimator<'a> {
    /// The message for an estimate of `cost`, over the budget.
    fn explain(&self, cost: f64) -> String {
        if let Some(why) = self.unbounded {
            return why.to_owned();
        }
        if !cost.is_finite() {
            return "its cost cannot be bounded".to_owned();
        }
        let mut text = format!(
            "would cost about {} steps, over the budget of {MAX_COST:.0}",
            approx(cost)
        );
        if let Some((n, iterations)) = self.costliest
            && iterations * 2.0 >= cost
            && n >= 1.0
        {
            text.push_str(&format!(
                ": its comprehension (all, exists, map, filter…) over up to {} elements costs about {} steps per element",
                approx(n),
                approx(iterations / n)
            ));
        }
        text
    }

    fn walk(&mut self, e: &'a IdedExpr) -> Est<'a> {
        match &e.expr {
            Expr::Unspecified => Est::scalar(1.0),
            Expr::Literal(literal) => literal_est(literal),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(select) => {
                let mut operand = self.walk(&select.operand);
                // A name (`a.b.c`) is resolved segment by segment in each scope searched.
                if let Some(root) = name_root(&select.operand) {
                    operand.cost += self.lookup(root);
                }
                if select.test {
                    Est::scalar(operand.cost + 1.0)
                } else {
                    let key = Key::String(Arc::new(select.field.clone()));
                    self.part(operand, Some(&key))
                }
            }
            Expr::Call(call) => self.call(call),
            Expr::List(list) => {
                let mut cost = 1.0;
                let mut size = Sz::ONE;
                let mut item = Sz::ZERO;
                for element in &list.elements {
                    let x = self.walk(element);
                    cost += x.cost + x.size().copy();
                    size = size.plus(x.size());
                    item = item.max(x.size());
                }
                Est::collection(cost, size, list.elements.len() as f64, item)
            }
            Expr::Map(map) => self.entries(&map.entries),
            Expr::Struct(s) => self.entries(&s.entries),
            Expr::Comprehension(c) => self.comprehension(c),
        }
    }

    fn entries(&mut self, entries: &'a [::cel::common::ast::IdedEntryExpr]) -> Est<'a> {
        let mut cost = 1.0;
        let mut size = Sz::ONE;
        let mut item = Sz::ZERO;
        let mut part = Sz::ZERO;
        for entry in entries {
            let (key, value) = match &entry.expr {
                EntryExpr::MapEntry(m) => (self.walk(&m.key), self.walk(&m.value)),
                EntryExpr::StructField(f) => {
                    (Est::text(1.0, f.field.len() as f64), self.walk(&f.value))
                }
            };
            // A key is two values more once in a map (see `key_size`).
            let key_size = key.size().plus(Sz {
                values: 2.0,
                bytes: 0.0,
            });
            cost += key.cost + value.cost + key_size.copy() + value.size().copy();
            size = size.plus(key_size).plus(value.size());
            item = item.max(key_size);
            part = part.max(value.size());
        }
        let mut map = Est::collection(cost, size, entries.len() as f64, item);
        map.shape.part = part;
        map
    }

    fn ident(&mut self, name: &str) -> Est<'a> {
        let cost = self.lookup(name);
        if let Some((_, est, _)) = self.scopes.iter().rev().find(|(n, _, _)| *n == name) {
            return est.with_cost(cost);
        }
        match self.bound.iter().find(|b| b.name == name) {
            Some(bound) => Est {
                cost,
                shape: bound.shape,
                known: Some(&bound.value),
            },
            // A type name or a namespace.
            None => Est::scalar(1.0),
        }
    }

    /// The shape of a part of a variable (measured once per estimate).
    fn measure(&mut self, value: &Value) -> Option<Shape> {
        let address = match value {
            Value::List(items) => Arc::as_ptr(items) as usize,
            Value::Map(map) => Arc::as_ptr(&map.map) as usize,
            other => return shape_of(other, &mut self.walk),
        };
        if let Some(shape) = self.measured.get(&address) {
            return Some(*shape);
        }
        let shape = shape_of(value, &mut self.walk)?;
        self.measured.insert(address, shape);
        Some(shape)
    }

    fn is_variable(&self, name: &str) -> bool {
        self.scopes.iter().any(|(n, _, _)| *n == name) || self.bound.iter().any(|b| b.name == name)
    }

    /// The cost of resolving one segment of a name rooted at `root`: the interpreter tries it
    /// in each scope, innermost first, up to the one that has the root.
    fn lookup(&self, root: &str) -> f64 {
        let searched = match self.scopes.iter().rev().find(|(n, _, _)| *n == root) {
            Some((_, _, level)) => self.depth - level + 1,
            None => self.depth + 1,
        };
        LOOKUP * searched as f64
    }

    /// `operand.key` or `operand[key]`: the part of a variable when the operand is one and the
    /// key a literal, else anything as large as the operand's largest part.
    fn part(&mut self, operand: Est<'a>, key: Option<&Key>) -> Est<'a> {
        let cost = operand.cost + 1.0;
        let found = match (operand.known, key) {
            (Some(Value::Map(map)), Some(key)) => Some(map.map.get(key)),
            (Some(Value::List(items)), Some(Key::Int(i))) => {
                Some(usize::try_from(*i).ok().and_then(|i| items.get(i)))
            }
            (Some(Value::List(items)), Some(Key::Uint(i))) => {
                Some(usize::try_from(*i).ok().and_then(|i| items.get(i)))
            }
            _ => None,
        };
        // A part of the operand is smaller by the operand's own node, and by a map's key.
        let less = match key {
            Some(key @ Key::String(_)) => Sz::ONE.plus(key_size(key)),
            _ => Sz::ONE,
        };
        let within = Sz {
            values: (operand.size().values - less.values).max(0.0),
            bytes: (operand.size().bytes - less.bytes).max(0.0),
        };
        // Either bound holds; the lesser only where it cannot break convexity (see `symbolic`).
        let bound = if operand.known.is_some() || self.symbolic == 0 {
            within.min(operand.shape.part)
        } else {
            within
        };
        match found {
            // Not there: the evaluation fails (or `?` gives none) before using it.
            Some(None) => Est::scalar(cost),
            Some(Some(value)) => {
                let shape = self.measure(value).unwrap_or(Shape {
                    size: bound,
                    len: match value {
                        Value::List(items) => items.len() as f64,
                        Value::Map(map) => map.map.len() as f64,
                        _ => bound.values,
                    },
                    item: bound,
                    part: bound,
                    kind: kind_of(value),
                });
                Est {
                    cost,
                    shape,
                    known: Some(value),
                }
            }
            None => Est::sized(cost, bound),
        }
    }

    fn call(&mut self, call: &'a ::cel::common::ast::CallExpr) -> Est<'a> {
        let name = call.func_name.as_str();
        // `strings.quote(x)`, `optional.of(x)`, `lists.range(n)`: the namespace is no operand.
        let namespaced = matches!(
            call.target.as_deref().map(|t| &t.expr),
            Some(Expr::Ident(ns)) if BUILTIN_IDENTIFIERS.contains(&ns.as_str()) && !self.is_variable(ns)
        );
        let operand_exprs: Vec<&'a IdedExpr> = call
            .target
            .as_deref()
            .filter(|_| !namespaced)
            .into_iter()
            .chain(call.args.iter())
            .collect();
        match name {
            "_?_:_" => {
                if let [c, a, b] = operand_exprs.as_slice() {
                    let (c, a, b) = (self.walk(c), self.walk(a), self.walk(b));
                    let kind = if a.shape.kind == b.shape.kind {
                        a.shape.kind
                    } else {
                        Kind::Any
                    };
                    return Est {
                        cost: 1.0 + c.cost + a.cost.max(b.cost),
                        shape: Shape {
                            size: a.size().max(b.size()),
                            len: a.shape.len.max(b.shape.len),
                            item: a.shape.item.max(b.shape.item),
                            part: a.shape.part.max(b.shape.part),
                            kind,
                        },
                        known: None,
                    };
                }
            }
            "_[_]" | "_[?_]" | "_?._" => {
                if let [operand, key] = operand_exprs.as_slice() {
                    let key_value = match &key.expr {
                        Expr::Literal(LiteralValue::String(s)) => {
                            Some(Key::String(Arc::new(s.inner().to_owned())))
                        }
                        Expr::Literal(LiteralValue::Int(i)) => Some(Key::Int(*i.inner())),
                        Expr::Literal(LiteralValue::UInt(u)) => Some(Key::Uint(*u.inner())),
                        _ => None,
                    };
                    let operand = self.walk(operand);
                    let key = self.walk(key);
                    let operand = operand.with_cost(operand.cost + key.cost + key.size().copy());
                    return self.part(operand, key_value.as_ref());
                }
            }
            "matches" => {
                let pattern = match operand_exprs.last().map(|p| &p.expr) {
                    Some(Expr::Literal(LiteralValue::String(p))) => Some(regex_states(p.inner())),
                    _ => None,
                };
                let ops: Vec<Est<'a>> = operand_exprs.iter().map(|e| self.walk(e)).collect();
                let cost = CALL + ops.iter().map(|o| o.cost + o.size().copy()).sum::<f64>();
                let text = ops.first().map_or(Sz::ZERO, Est::size);
                return match pattern {
                    Some(states) => Est::scalar(
                        cost + scan(text.bytes)
                            + states * REGEX_COMPILE
                            + mul(text.bytes + 1.0, states) * REGEX_MATCH,
                    ),
                    None => {
                        self.unbounded = Some(
                            "matches() with a pattern that is not a string literal cannot be held to the evaluation budget",
                        );
                        Est::scalar(f64::INFINITY)
                    }
                };
            }
            "range" if namespaced => {
                let n = match call.args.first().map(|a| &a.expr) {
                    Some(Expr::Literal(LiteralValue::Int(n))) => {
                        (*n.inner() as f64).clamp(0.0, MAX_RANGE)
                    }
                    _ => MAX_RANGE,
                };
                let ops: Vec<Est<'a>> = operand_exprs.iter().map(|e| self.walk(e)).collect();
                let cost = CALL + ops.iter().map(|o| o.cost).sum::<f64>() + n;
                return Est::collection(cost, Sz::ONE.plus(Sz::ONE.times(n)), n, Sz::ONE);
            }
            _ => {}
        }
        let ops: Vec<Est<'a>> = operand_exprs.iter().map(|e| self.walk(e)).collect();
        self.function(name, &ops)
    }

    /// A function over operands estimated `ops` (the target first).
    fn function(&mut self, name: &str, ops: &[Est<'a>]) -> Est<'a> {
        let operator = name.starts_with(['_', '@', '!', '-']);
        let call = if operator { 1.0 } else { CALL };
        let cost = call + ops.iter().map(|o| o.cost).sum::<f64>();
        let read = ops.iter().map(|o| o.size().copy()).sum::<f64>();
        let zero = Est::sized(0.0, Sz::ZERO);
        let x = ops.first().copied().unwrap_or(zero);
        let y = ops.get(1).copied().unwrap_or(zero);
        let xs = x.size();
        match name {
            // Logic, arithmetic and tests: a value, after reading the operands.
            "_&&_"
            | "_||_"
            | "!_"
            | "@not_strictly_false"
            | "_-_"
            | "_*_"
            | "_/_"
            | "_%_"
            | "-_"
            | "contains"
            | "startsWith"
            | "endsWith" => Est::scalar(cost + read),
            // Comparing values of different types writes both into an error, then drops it.
            "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" => Est::scalar(cost + 2.0 * read),
            "size" | "hasValue" | "type" | "none" => Est::scalar(cost),
            // A map is looked up; a list searched, each element compared with the value.
            "@in" if matches!(y.known, Some(Value::Map(_))) => Est::scalar(cost + 2.0 * xs.copy()),
            "@in" => Est::scalar(cost + read + mul(y.shape.len, 2.0 * (1.0 + xs.copy()))),
            // Conversions parse text.
            "int" | "uint" | "double" | "bool" | "duration" | "timestamp" => {
                Est::scalar(cost + read + scan(xs.bytes))
            }
            getter if getter.starts_with("get") => Est::scalar(cost + read),
            // Every window of the text is compared with the needle.
            "indexOf" | "lastIndexOf" => Est::scalar(
                cost + scan(xs.bytes + y.size().bytes) + mul(xs.bytes, y.size().bytes) / 16.0,
            ),
            "_+_" => {
                let kinds = ops.iter().map(|o| o.shape.kind);
                let sum = ops.iter().fold(Sz::ZERO, |s, o| s.plus(o.size()));
                if kinds.clone().any(|k| k == Kind::Scalar) {
                    Est::scalar(cost)
                } else if kinds.clone().any(|k| k == Kind::Text) {
                    Est::text(cost + read + sum.bytes / COPY_BYTES, sum.bytes)
                } else {
                    // Lists concatenated, copied.
                    let len = ops.iter().map(|o| o.shape.len).sum();
                    let item = ops.iter().fold(Sz::ZERO, |s, o| s.max(o.shape.item));
                    Est::collection(cost + read + sum.copy(), sum, len, item)
                }
            }
            "trim" | "lowerAscii" | "upperAscii" | "substring" | "bytes" => Est::text(
                cost + read + scan(xs.bytes) + xs.bytes / COPY_BYTES,
                xs.bytes,
            ),
            "charAt" => Est::text(cost + read + scan(xs.bytes), 4.0),
            "quote" => {
                let out = 2.0 * xs.bytes + 2.0;
                Est::text(cost + read + scan(xs.bytes) + out / COPY_BYTES, out)
            }
            "reverse" if x.shape.kind == Kind::Text => Est::text(
                cost + read + scan(xs.bytes) + xs.bytes / COPY_BYTES,
                xs.bytes,
            ),
            // `x.replace(old, new[, n])`: each of the up to |x| + 1 matches inserts `new`.
            "replace" => {
                let new = ops.get(2).map_or(0.0, |n| n.size().bytes);
                let out = xs.bytes + mul(xs.bytes + 1.0, new);
                Est::text(cost + read + scan(xs.bytes) + out / COPY_BYTES, out)
            }
            // `x.split(sep[, n])`: up to |x| + 1 parts.
            "split" => {
                let parts = xs.bytes + 1.0;
                let size = Sz {
                    values: 1.0 + parts,
                    bytes: xs.bytes,
                };
                // Each part is a new string, and a new value.
                Est::collection(
                    cost + read + scan(xs.bytes) + 2.0 * size.copy(),
                    size,
                    parts,
                    Sz::text(xs.bytes),
                )
            }
            "join" => {
                let out = xs.bytes + mul(x.shape.len, y.size().bytes);
                Est::text(cost + read + out / COPY_BYTES, out)
            }
            // Each clause (two bytes at least) writes one element of the list.
            "format" => {
                let list = y.size();
                let out = xs.bytes
                    + mul(xs.bytes / 2.0, CLAUSE_BYTES)
                    + 2.0 * list.bytes
                    + mul(list.values, FORMAT_BYTES);
                Est::text(
                    cost + read + scan(xs.bytes) + list.values + out / COPY_BYTES,
                    out,
                )
            }
            "string" => {
                let out = xs.bytes + mul(xs.values, FORMAT_BYTES);
                Est::text(cost + read + out / COPY_BYTES, out)
            }
            "dyn" | "of" | "value" => x.with_cost(cost + read),
            // Lists reordered or cut: no larger than the list, copied.
            "reverse" | "slice" => Est {
                cost: cost + read + xs.copy(),
                shape: Shape {
                    kind: Kind::Any,
                    ..x.shape
                },
                known: None,
            },
            "flatten" => Est::collection(cost + read + xs.copy(), xs, xs.values, x.shape.item),
            // Each element is compared with the distinct ones kept.
            "distinct" => Est {
                cost: cost + read + xs.copy() + mul(x.shape.len, 2.0 * xs.copy()),
                shape: x.shape,
                known: None,
            },
            "sort" => Est {
                cost: cost
                    + read
                    + xs.copy()
                    + mul(sorting(x.shape.len), 1.0 + x.shape.item.copy()),
                shape: x.shape,
                known: None,
            },
            "@sortByAssociatedKeys" => Est {
                cost: cost
                    + read
                    + xs.copy()
                    + mul(
                        sorting(y.shape.len) + y.shape.len,
                        1.0 + y.shape.item.copy(),
                    ),
                shape: x.shape,
                known: None,
            },
            // Anything else: no larger than its operands together.
            _ => {
                let sum = ops.iter().fold(Sz::ZERO, |s, o| s.plus(o.size()));
                let len = ops.iter().map(|o| o.shape.len).sum();
                let item = ops.iter().fold(Sz::ZERO, |s, o| s.max(o.shape.item));
                Est::collection(cost + read + sum.copy(), sum, len, item)
            }
        }
    }

    /// A comprehension (`all`, `exists`, `exists_one`, `map`, `filter`, `sortBy`, `optMap`).
    fn comprehension(&mut self, c: &'a ComprehensionExpr) -> Est<'a> {
        let range = self.walk(&c.iter_range);
        let init = self.walk(&c.accu_init);
        let before = 1.0 + range.cost + init.cost;
        let n = range.shape.len;
        if n == 0.0 {
            // No iteration: a variable bound to a value (`cel.bind`, `sortBy`, `optMap`).
            let element = element(range.shape.item);
            let result = self.scoped(c, element, init, |s| s.walk(&c.result));
            return result.with_cost(before + result.cost);
        }
        let each = Elements::EachAtMost(range.shape.item);
        let all = Elements::AllTogether(Sz::whole(range.size().total()));
        let pass = if self.symbolic == 0 {
            let a = self.pass(c, &init, n, each);
            let b = self.pass(c, &init, n, all);
            let pass = Pass {
                iterations: least(a.iterations, b.iterations),
                result: a.result.least(b.result),
            };
            if pass.iterations > self.costliest.map_or(0.0, |(_, cost)| cost) {
                self.costliest = Some((n, pass.iterations));
            }
            pass
        } else if range.known.is_some() {
            self.pass(c, &init, n, each)
        } else {
            self.pass(c, &init, n, all)
        };
        pass.result
            .with_cost(before + pass.iterations + pass.result.cost)
    }

    /// Runs `f` with the comprehension's variables bound: its element(s) to `element`, its
    /// accumulator to `accu`.
    fn scoped<T>(
        &mut self,
        c: &'a ComprehensionExpr,
        element: Est<'a>,
        accu: Est<'a>,
        f: impl FnOnce(&mut Self) -> T,
    ) -> T {
        let len = self.scopes.len();
        self.depth += 1;
        let level = self.depth;
        self.scopes.push((&c.iter_var, element, level));
        if let Some(second) = &c.iter_var2 {
            self.scopes.push((second, element, level));
        }
        self.scopes.push((&c.accu_var, accu, level));
        let out = f(self);
        self.scopes.truncate(len);
        self.depth -= 1;
        out
    }

    /// Estimates a comprehension's `n` iterations and its result, its elements bounded by
    /// `elements`: each at most `item` (n × one iteration over the largest), or all together
    /// at most `S` (n × one iteration over an empty element + one over `S`, sound as every rule
    /// is convex in the element's size).
    fn pass(
        &mut self,
        c: &'a ComprehensionExpr,
        init: &Est<'a>,
        n: f64,
        elements: Elements,
    ) -> Pass<'a> {
        let (per, last, largest) = match elements {
            Elements::EachAtMost(item) => (item, None, item),
            Elements::AllTogether(total) => (Sz::ZERO, Some(total), total),
        };
        if last.is_some() {
            self.symbolic += 1;
        }
        let (iterations, accu) = match append_step(c) {
            // `map` and `filter`: the interpreter appends to the accumulator in place.
            Some((guard, appended)) => {
                let iteration = |s: &mut Self, e: Sz| {
                    s.scoped(c, element(e), Est::sized(1.0, Sz::ZERO), |s| {
                        let cond = s.walk(&c.loop_cond).cost;
                        let guard = guard.map_or(0.0, |g| s.walk(g).cost);
                        let items = s.walk(appended);
                        let cost = ITERATION + e.copy() + cond + guard + items.cost;
                        (cost + items.size().copy(), items)
                    })
                };
                let (cost, items) = iteration(self, per);
                let (last_cost, last_items) = match last {
                    Some(e) => {
                        let (cost, items) = iteration(self, e);
                        (cost, Some(items))
                    }
                    None => (0.0, None),
                };
                let added = |items: &Est<'a>| Sz {
                    values: (items.size().values - 1.0).max(0.0),
                    bytes: items.size().bytes,
                };
                let k = match &appended.expr {
                    Expr::List(list) => list.elements.len() as f64,
                    _ => 1.0,
                };
                let mut size = Sz::ONE.plus(added(&items).times(n));
                let mut len = mul(k, n);
                let mut item = items.shape.item;
                if let Some(last) = &last_items {
                    size = size.plus(added(last));
                    len += k;
                    item = last.shape.item;
                }
                (
                    mul(n, cost) + last_cost,
                    Est::collection(1.0, size, len, item),
                )
            }
            None => self.fold(c, init, n, per, last),
        };
        if last.is_some() {
            self.symbolic -= 1;
        }
        let result = self.scoped(c, element(largest), accu, |s| s.walk(&c.result));
        Pass { iterations, result }
    }

    /// The iterations of a comprehension whose step makes a new accumulator (`all`, `exists`,
    /// `exists_one`): their cost, and the accumulator's estimate.
    fn fold(
        &mut self,
        c: &'a ComprehensionExpr,
        init: &Est<'a>,
        n: f64,
        per: Sz,
        last: Option<Sz>,
    ) -> (f64, Est<'a>) {
        let scalar = init.shape.kind == Kind::Scalar;
        let empty = if scalar {
            Est::scalar(1.0)
        } else {
            Est::sized(1.0, Sz::ZERO)
        };
        // What one step adds to the accumulator.
        let growth = |s: &mut Self, e: Sz| s.scoped(c, element(e), empty, |s| s.walk(&c.loop_step));
        let grow = growth(self, per);
        let grow_last = last.map(|e| growth(self, e));
        let accu = if scalar
            && grow.shape.kind == Kind::Scalar
            && grow_last.is_none_or(|g| g.shape.kind == Kind::Scalar)
        {
            Est::scalar(1.0)
        } else {
            let mut size = init.size().plus(grow.size().times(n));
            if let Some(g) = &grow_last {
                size = size.plus(g.size());
            }
            Est::sized(1.0, size)
        };
        let iteration = |s: &mut Self, e: Sz, grow: &Est<'a>| {
            s.scoped(c, element(e), accu, |s| {
                let cond = s.walk(&c.loop_cond).cost;
                let step = s.walk(&c.loop_step);
                // A step that more than adds to the accumulator is beyond this estimate.
                if accu.shape.kind != Kind::Scalar
                    && !step.size().within(accu.size().plus(grow.size()))
                {
                    return f64::INFINITY;
                }
                ITERATION + e.copy() + cond + step.cost + step.size().copy()
            })
        };
        let mut cost = mul(n, iteration(self, per, &grow));
        if let (Some(e), Some(g)) = (last, &grow_last) {
            cost += iteration(self, e, g);
        }
        (cost, accu)
    }
}

/// The variable a name (`a`, `a.b.c`) starts with.
fn name_root(e: &IdedExpr) -> Option<&str> {
    match &e.expr {
        Expr::Ident(name) => Some(name),
        Expr::Select(select) if !select.test => name_root(&select.operand),
        _ => None,
    }
}

/// An element of a comprehension of at most `size`.
fn element<'a>(size: Sz) -> Est<'a> {
    Est::sized(1.0, size)
}

fn literal_est<'a>(literal: &LiteralValue) -> Est<'a> {
    match literal {
        LiteralValue::String(s) => Est::text(1.0, s.inner().len() as f64),
        LiteralValue::Bytes(b) => Est::text(1.0, b.inner().len() as f64),
        _ => Est::scalar(1.0),
    }
}

/// The guard and the appended list of a `map` or `filter` step, `@result + [e]` or
/// `g ? @result + [e] : @result` over an empty list, which the interpreter appends in place:
/// the same test as the interpreter's.
fn append_step(c: &ComprehensionExpr) -> Option<(Option<&IdedExpr>, &IdedExpr)> {
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(name) if *name == c.accu_var);
    fn items_of<'e>(e: &'e IdedExpr, accu: &str) -> Option<&'e IdedExpr> {
        match &e.expr {
            Expr::Call(call) if call.func_name == "_+_" && call.target.is_none() => {
                match call.args.as_slice() {
                    [lhs, rhs]
                        if matches!(&lhs.expr, Expr::Ident(name) if name == accu)
                            && matches!(rhs.expr, Expr::List(_)) =>
                    {
                        Some(rhs)
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
    let empty_init = matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty());
    if !is_accu(&c.result) || !matches!(c.loop_cond.expr, Expr::Literal(_)) || !empty_init {
        return None;
    }
    match &c.loop_step.expr {
        Expr::Call(call) if call.func_name == "_?_:_" && call.target.is_none() => {
            match call.args.as_slice() {
                [guard, step, otherwise] if is_accu(otherwise) => {
                    Some((Some(guard), items_of(step, &c.accu_var)?))
                }
                _ => None,
            }
        }
        _ => Some((None, items_of(&c.loop_step, &c.accu_var)?)),
    }
}

/// A conservative count of the states of the automaton a regular expression compiles to:
/// characters count one, classes and `.` more (Unicode classes many), a group its content,
/// and a counted repetition (`{n,m}`) multiplies what it repeats.
fn regex_states(pattern: &str) -> f64 {
    // Each open group: its states so far, and those of its last atom.
    let mut groups: Vec<(f64, f64)> = vec![(0.0, 0.0)];
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let atom = match c {
            '\\' => match chars.next() {
                Some('d' | 'D' | 'w' | 'W' | 's' | 'S') => 256.0,
                Some('p' | 'P') => {
                    if chars.peek() == Some(&'{') {
                        for c in chars.by_ref() {
                            if c == '}' {
                                break;
                            }
                        }
                    } else {
                        chars.next();
                    }
                    256.0
                }
                Some('b' | 'B') => 64.0,
                _ => 1.0,
            },
            '[' => {
                // To the matching `]`, nested classes included.
                let (mut depth, mut len, mut simple) = (1usize, 0usize, true);
                if chars.peek() == Some(&'^') {
                    simple = false;
                }
                if chars.peek() == Some(&']') {
                    chars.next();
                }
                while let Some(c) = chars.next() {
                    len += 1;
                    match c {
                        '\\' => {
                            simple = false;
                            chars.next();
                        }
                        '[' => {
                            simple = false;
                            depth += 1;
                        }
                        ']' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        c if !c.is_ascii() => simple = false,
                        _ => {}
                    }
                }
                if simple { 2.0 } else { 64.0 + 4.0 * len as f64 }
            }
            '.' => 16.0,
            '(' => {
                groups.push((1.0, 0.0));
                continue;
            }
            ')' => match groups.pop() {
                Some((states, _)) if !groups.is_empty() => states + 1.0,
                Some(outer) => {
                    groups.push(outer);
                    1.0
                }
                None => 1.0,
            },
            '|' | '*' | '+' | '?' => {
                if let Some(group) = groups.last_mut() {
                    group.0 += 1.0;
                    if c == '|' {
                        group.1 = 0.0;
                    }
                }
                continue;
            }
            '{' => {
                let mut spec = String::new();
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_digit() || d == ',' || d == ' ' {
                        spec.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if chars.peek() == Some(&'}') && !spec.trim().is_empty() {
                    chars.next();
                    let mut bounds = spec.split(',').map(|b| b.trim().parse::<f64>().ok());
                    let low = bounds.next().flatten().unwrap_or(0.0);
                    let high = match bounds.next() {
                        None => low,
                        Some(high) => high.unwrap_or(low + 1.0),
                    };
                    let times = low.max(high).max(1.0);
                    if let Some(group) = groups.last_mut() {
                        group.0 += group.1 * (times - 1.0) + 1.0;
                        group.1 *= times;
                    }
                    continue;
                }
                1.0 + spec.len() as f64
            }
            _ => 1.0,
        };
        if let Some(group) = groups.last_mut() {
            group.0 += atom;
            group.1 = atom;
        }
    }
    // Unclosed groups (an invalid pattern, refused when compiled) count as closed.
    let states = groups.iter().map(|g| g.0).sum::<f64>() + 1.0;
    // Flags (`(?i)`: case-insensitive letters become classes).
    if pattern.contains("(?") {
        4.0 * states
    } else {
        states
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

    fn long_list(n: usize) -> serde_json::Value {
        json!({"l": (0..n).collect::<Vec<_>>()})
    }

    fn over_budget(result: Result<impl std::fmt::Debug, EvalError>) -> String {
        match result {
            Err(EvalError::OverBudget(text)) => text,
            other => panic!("not over budget: {other:?}"),
        }
    }

    #[test]
    fn the_issue_attack_is_refused_before_it_runs() {
        // `l.map(x, l)` over 20,000 elements builds 4·10⁸ values.
        let expr = Expression::compile("body.l.map(x, body.l)", VARS).unwrap();
        let big = vars(long_list(20_000));
        let start = std::time::Instant::now();
        let text = over_budget(expr.evaluate_json(&big));
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_millis(50), "{took:?}");
        assert_eq!(
            text,
            "would cost about 1.6e9 steps, over the budget of 450000: its comprehension (all, \
             exists, map, filter…) over up to 20000 elements costs about 40022 steps per element"
        );
        assert_eq!(EvalError::OverBudget(text.clone()).to_string(), text);
        // Every evaluation refuses it.
        over_budget(expr.evaluate(&big));
        over_budget(expr.evaluate_bool(&big));
        over_budget(expr.evaluate_number(&big));
        over_budget(expr.evaluate_string(&big));
        let size = Expression::compile("body.l.map(x, body.l).size() > 0", VARS).unwrap();
        over_budget(size.evaluate_bool(&big));
        // Over a short list, it runs.
        assert_eq!(
            expr.evaluate_json(&vars(long_list(2))),
            Ok(json!([[0, 1], [0, 1]]))
        );
    }

    #[test]
    fn chained_replaces_are_refused() {
        // Each replace may multiply the text: 10 bytes become 5¹² times more.
        let chain = format!("body.s{}", ".replace('a', 'aaaa')".repeat(12));
        let expr = Expression::compile(&chain, VARS).unwrap();
        let start = std::time::Instant::now();
        let text = over_budget(expr.evaluate_json(&vars(json!({"s": "a".repeat(10)}))));
        assert!(start.elapsed() < std::time::Duration::from_millis(50));
        assert!(text.contains("over the budget"), "{text}");
        // One replace over an ordinary text runs.
        assert_eq!(
            eval("body.s.replace('-', '_')", json!({"s": "a-b-c"})),
            Ok(json!("a_b_c"))
        );
        // Concatenation builds what it says.
        let text = over_budget(eval("body.s + body.s", json!({"s": "a".repeat(600_000)})));
        assert_eq!(
            text,
            "would build a value of about 1.2e6 values and bytes of text, over the budget of 1048576"
        );
    }

    #[test]
    fn deep_but_ordinary_expressions_run() {
        let items: Vec<_> = (0..5000)
            .map(|i| json!({"name": format!("item-{i}"), "ready": i % 2 == 0}))
            .collect();
        let body = json!({"items": items});
        let names = eval("body.items.filter(i, i.ready).map(i, i.name)", body.clone()).unwrap();
        assert_eq!(names.as_array().map(Vec::len), Some(2500));
        assert_eq!(names[1], json!("item-2"));
        assert_eq!(
            eval(
                "body.items.all(i, i.name.startsWith('item-'))",
                body.clone()
            ),
            Ok(json!(true))
        );
        // A map's values by key, its keys matched against a pattern.
        let labels: serde_json::Map<_, _> = (0..1000)
            .map(|i| (format!("label-{i}"), json!(format!("value-{i}"))))
            .collect();
        let labels = json!({"labels": labels});
        assert_eq!(
            eval(
                "body.labels.all(k, body.labels[k] != '' && k.matches('^label-[0-9]+$'))",
                labels
            ),
            Ok(json!(true))
        );
        // A whole answer of about 1 MiB, and a field of it.
        let docs: Vec<_> = (0..4000)
            .map(|i| json!({"id": format!("doc-{i}"), "text": "lorem ipsum dolor sit amet ".repeat(8)}))
            .collect();
        let answer = json!({"status": "done", "docs": docs});
        assert!(answer.to_string().len() > 900_000);
        assert_eq!(eval("body", answer.clone()), Ok(answer.clone()));
        assert_eq!(
            eval("body.status == 'done'", answer.clone()),
            Ok(json!(true))
        );
        assert_eq!(
            eval("body.docs.exists(d, d.id == 'doc-3999')", answer),
            Ok(json!(true))
        );
    }

    #[test]
    fn a_pattern_read_from_data_is_refused() {
        let text = over_budget(eval(
            "body.s.matches(body.p)",
            json!({"s": "ab", "p": "a[ab]{1000}c"}),
        ));
        assert_eq!(
            text,
            "matches() with a pattern that is not a string literal cannot be held to the evaluation budget"
        );
        // A literal pattern over a long text costs by the size of its automaton.
        let ab = "ab".repeat(10_000);
        assert_eq!(
            eval("body.s.matches('^(ab)+$')", json!({"s": ab.clone()})),
            Ok(json!(true))
        );
        over_budget(eval("body.s.matches('a[ab]{30}c')", json!({"s": ab})));
    }

    #[test]
    fn regex_states_grow_with_counted_repetitions() {
        assert!(regex_states("abc") < 10.0);
        assert!(regex_states("a[ab]{30}c") > 60.0);
        assert!(regex_states("(a[ab]{30}){30}") > 1800.0);
        assert!(regex_states("\\w+") >= 256.0);
        assert!(regex_states("(?i)abc") > regex_states("abc"));
        // Malformed patterns are estimated, not refused here.
        for odd in ["(", ")", "[", "a{", "a{1,", "a{,5}", "\\", "[]]", "[^]"] {
            assert!(regex_states(odd).is_finite(), "{odd}");
        }
    }

    /// Expressions of the shapes that cost (comprehensions, concatenation, growth), typed so
    /// that most evaluate: a list, a text, a bool, a number, or any of them (`x` is the element
    /// of the enclosing comprehension).
    mod typed {
        use proptest::prelude::*;

        type S = BoxedStrategy<String>;

        fn pick(options: &'static [&'static str]) -> S {
            proptest::sample::select(options)
                .prop_map(str::to_owned)
                .boxed()
        }

        pub fn list(d: u32) -> S {
            let leaf = pick(&[
                "body.l",
                "body.items",
                "[1, 2, 3]",
                "body.s.split('')",
                "body.m.map(k, k)",
            ]);
            if d == 0 {
                return leaf;
            }
            prop_oneof![
                leaf,
                (list(d - 1), any(d - 1)).prop_map(|(l, e)| format!("{l}.map(x, {e})")),
                (list(d - 1), boolean(d - 1)).prop_map(|(l, b)| format!("{l}.filter(x, {b})")),
                (list(d - 1), list(d - 1)).prop_map(|(a, b)| format!("{a} + {b}")),
                (any(d - 1), any(d - 1)).prop_map(|(a, b)| format!("[{a}, {b}]")),
                text(d - 1).prop_map(|t| format!("{t}.split('')")),
                list(d - 1).prop_map(|l| format!("{l}.distinct()")),
                list(d - 1).prop_map(|l| format!("{l}.sortBy(y, '%s'.format([y]))")),
            ]
            .boxed()
        }

        pub fn text(d: u32) -> S {
            let leaf = pick(&["body.s", "'ab'", "body.items[0].name", "'%s'.format([x])"]);
            if d == 0 {
                return leaf;
            }
            prop_oneof![
                leaf,
                (text(d - 1), text(d - 1)).prop_map(|(a, b)| format!("{a} + {b}")),
                text(d - 1).prop_map(|t| format!("{t}.replace('a', 'aa')")),
                text(d - 1).prop_map(|t| format!("{t}.replace('', 'ab')")),
                text(d - 1).prop_map(|t| format!("{t}.upperAscii().reverse()")),
                number(d - 1).prop_map(|n| format!("string({n})")),
                list(d - 1).prop_map(|l| format!("{l}.map(x, '%s'.format([x])).join('-')")),
                any(d - 1).prop_map(|e| format!("'<%s>'.format([{e}])")),
            ]
            .boxed()
        }

        pub fn boolean(d: u32) -> S {
            let leaf = pick(&["true", "x == x", "has(body.m.k1)"]);
            if d == 0 {
                return leaf;
            }
            prop_oneof![
                leaf,
                (list(d - 1), boolean(d - 1)).prop_map(|(l, b)| format!("{l}.all(x, {b})")),
                (list(d - 1), boolean(d - 1)).prop_map(|(l, b)| format!("{l}.exists(x, {b})")),
                (list(d - 1), boolean(d - 1)).prop_map(|(l, b)| format!("{l}.exists_one(x, {b})")),
                text(d - 1).prop_map(|t| format!("{t}.matches('a[ab]{{3}}c')")),
                (text(d - 1), text(d - 1)).prop_map(|(a, b)| format!("{a}.contains({b})")),
                (any(d - 1), any(d - 1)).prop_map(|(a, b)| format!("{a} == {b}")),
                (any(d - 1), list(d - 1)).prop_map(|(a, l)| format!("{a} in {l}")),
                (number(d - 1), number(d - 1)).prop_map(|(a, b)| format!("{a} < {b}")),
            ]
            .boxed()
        }

        pub fn number(d: u32) -> S {
            let leaf = pick(&["1", "body.l.size()", "body.s.size()"]);
            if d == 0 {
                return leaf;
            }
            prop_oneof![
                leaf,
                list(d - 1).prop_map(|l| format!("size({l})")),
                text(d - 1).prop_map(|t| format!("size({t})")),
                (number(d - 1), number(d - 1)).prop_map(|(a, b)| format!("{a} + {b}")),
            ]
            .boxed()
        }

        pub fn any(d: u32) -> S {
            prop_oneof![
                pick(&["x", "body.m", "body.items[0]"]),
                list(d),
                text(d),
                boolean(d),
                number(d),
            ]
            .boxed()
        }
    }

    /// Bodies of bounded, random sizes.
    fn sized_body() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        (0usize..30_000, 0usize..200_000, 0usize..3000, 1usize..3000).prop_map(|(l, s, m, items)| {
            json!({
                "l": (0..l).collect::<Vec<_>>(),
                "s": "ab".repeat(s / 2),
                "m": (0..m).map(|i| (format!("k{i}"), json!(i))).collect::<serde_json::Map<_, _>>(),
                "items": (0..items).map(|i| json!({"name": format!("item-{i}"), "ready": i % 3 == 0})).collect::<Vec<_>>(),
            })
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Whatever the estimate accepts runs in a bounded time, and builds no more than it
        /// estimated.
        #[test]
        fn what_the_budget_accepts_runs_quickly(
            source in typed::any(3),
            body in sized_body(),
        ) {
            let Ok(expr) = Expression::compile(&source, VARS) else {
                return Ok(());
            };
            let vars = vars(body);
            let (_, estimated, _) = estimate(&expr.expr, &vars);
            let start = std::time::Instant::now();
            let result = expr.evaluate(&vars);
            let took = start.elapsed();
            if !matches!(result, Err(EvalError::OverBudget(_))) {
                proptest::prop_assert!(
                    took < std::time::Duration::from_millis(500),
                    "{source} took {took:?}"
                );
            }
            if let Ok(value) = &result {
                let mut unlimited = u64::MAX;
                let actual = size_of(value, &mut unlimited).unwrap_or(Sz::ZERO);
                proptest::prop_assert!(
                    actual.values <= estimated.values && actual.bytes <= estimated.bytes,
                    "{source}: built {actual:?}, estimated {estimated:?}"
                );
            }
        }
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
