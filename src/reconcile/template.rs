//! `${ <CEL> }` templating of a start request (the kro syntax): `start.path`, `start.query`
//! values and every string of `start.body`. A string that is exactly one `${…}` takes the
//! expression's typed value; otherwise each `${…}` is replaced by its value as text.
//!
//! Variables: `deps` (a map from each dependency's name to its status as JSON) and `self`
//! (this object's metadata name/namespace/labels/annotations and spec).

use std::collections::BTreeMap;

use serde_json::Value;

use super::limits::{MAX_HANDLE, MAX_RENDERED_START, MAX_RESULT_DEPTH};
use crate::api::{RenderedStart, StartRequest};
use crate::cel::{Expression, Variables};

/// The variables a template expression may use.
pub const VARIABLES: &[&str] = &["deps", "self"];

/// One piece of a templated string.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Text kept as is.
    Text(String),
    /// The source of a `${…}` expression.
    Expr(String),
}

/// Splits a string into text and `${…}` expressions. A `}` inside a quoted CEL string or a
/// nested `{…}` (a map literal) does not end the expression.
fn pieces(s: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        text.push_str(&rest[..at]);
        let body = &rest[at + 2..];
        let mut depth = 0usize;
        let mut quote: Option<char> = None;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in body.char_indices() {
            if let Some(q) = quote {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                continue;
            }
            match c {
                '\'' | '"' => quote = Some(c),
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = Some(i);
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let Some(end) = end else {
            return Err(format!("unterminated ${{ in {s:?}"));
        };
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        out.push(Piece::Expr(body[..end].trim().to_owned()));
        rest = &body[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// Every templated string of a start request, as `(field, string)`.
fn strings(start: &StartRequest) -> Vec<(String, String)> {
    let mut out = vec![("start.path".to_owned(), start.path.clone())];
    for (k, v) in &start.query {
        out.push((format!("start.query.{k}"), v.clone()));
    }
    if let Some(body) = &start.body {
        body_strings(body, "start.body", &mut out);
    }
    out.retain(|(_, s)| s.contains("${"));
    out
}

fn body_strings(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => out.push((at.to_owned(), s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                body_strings(item, &format!("{at}[{i}]"), out);
            }
        }
        Value::Object(fields) => {
            for (k, v) in fields {
                body_strings(v, &format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Whether the start request holds any `${…}`.
pub fn is_templated(start: &StartRequest) -> bool {
    !strings(start).is_empty()
}

/// The problems of a start request's templates: unterminated `${` and expressions that do not
/// compile, each `field: what is wrong` (for the admission webhook).
pub fn check(start: &StartRequest) -> Vec<String> {
    if let Err(too_many) = within_template_limit(start) {
        return vec![too_many];
    }
    let mut problems = Vec::new();
    for (field, s) in strings(start) {
        match pieces(&s) {
            Err(e) => problems.push(format!("{field}: {e}")),
            Ok(pieces) => {
                for piece in pieces {
                    if let Piece::Expr(source) = piece
                        && let Err(e) = Expression::compile(&source, VARIABLES)
                    {
                        problems.push(format!("{field}: ${{{source}}} does not compile: {e}"));
                    }
                }
            }
        }
    }
    problems
}

/// The most `${…}` templates a start request may hold (each is compiled at admission and
/// evaluated once, before the start).
pub const MAX_TEMPLATES: usize = 64;

/// `Err` when the start request holds more than [`MAX_TEMPLATES`] templates.
fn within_template_limit(start: &StartRequest) -> Result<(), String> {
    let count: usize = strings(start)
        .iter()
        .map(|(_, s)| s.matches("${").count())
        .sum();
    if count > MAX_TEMPLATES {
        return Err(format!(
            "spec.start holds {count} ${{…}} templates, more than {MAX_TEMPLATES}"
        ));
    }
    Ok(())
}

/// The variables of a template: `deps` (name → status JSON) and `self`.
pub fn variables(deps: &BTreeMap<String, Value>, this: &Value) -> Variables {
    let mut vars = Variables::new();
    let deps = Value::Object(deps.clone().into_iter().collect());
    vars.bind_json("deps", &deps);
    vars.bind_json("self", this);
    vars
}

/// Renders one string: typed when it is exactly one `${…}`, else text.
fn render_string(field: &str, s: &str, vars: &Variables) -> Result<Value, String> {
    let pieces = pieces(s).map_err(|e| format!("{field}: {e}"))?;
    let eval = |source: &str| -> Result<Value, String> {
        let expr = Expression::compile(source, VARIABLES)
            .map_err(|e| format!("{field}: ${{{source}}} does not compile: {e}"))?;
        expr.evaluate_json(vars)
            .map_err(|e| format!("{field}: ${{{source}}} failed: {e}"))
    };
    if let [Piece::Expr(source)] = pieces.as_slice() {
        return eval(source);
    }
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Expr(source) => match eval(&source)? {
                Value::String(v) => out.push_str(&v),
                other => out.push_str(&other.to_string()),
            },
        }
    }
    Ok(Value::String(out))
}

fn as_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn render_body(value: &Value, at: &str, vars: &Variables) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) if s.contains("${") => render_string(at, s, vars)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| render_body(item, &format!("{at}[{i}]"), vars))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), render_body(v, &format!("{at}.{k}"), vars)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Renders the templated parts of a start request. The error names the field and the expression.
pub fn render(start: &StartRequest, vars: &Variables) -> Result<RenderedStart, String> {
    within_template_limit(start)?;
    let path = as_text(render_string("start.path", &start.path, vars)?);
    let query = start
        .query
        .iter()
        .map(|(k, v)| {
            let field = format!("start.query.{k}");
            Ok((k.clone(), as_text(render_string(&field, v, vars)?)))
        })
        .collect::<Result<_, String>>()?;
    let body = start
        .body
        .as_ref()
        .map(|b| render_body(b, "start.body", vars))
        .transpose()?;
    let rendered = RenderedStart { path, query, body };
    // What was rendered is kept in the status: bounded like everything else there.
    if rendered.path.len() > MAX_HANDLE {
        return Err(format!(
            "start.path renders to {} bytes, more than {MAX_HANDLE}",
            rendered.path.len()
        ));
    }
    let depth = rendered.body.as_ref().map_or(0, crate::nesting::depth);
    if depth > MAX_RESULT_DEPTH {
        return Err(format!(
            "start.body renders to JSON nested {depth} levels deep, more than {MAX_RESULT_DEPTH}"
        ));
    }
    let size = serde_json::to_vec(&rendered).map_or(0, |v| v.len());
    if size > MAX_RENDERED_START {
        return Err(format!(
            "start renders to {size} bytes of JSON, more than {MAX_RENDERED_START}"
        ));
    }
    Ok(rendered)
}

/// `start` with the rendered path, query and body in place.
pub fn apply(start: &StartRequest, rendered: &RenderedStart) -> StartRequest {
    StartRequest {
        path: rendered.path.clone(),
        query: rendered.query.clone(),
        body: rendered.body.clone(),
        ..start.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::HttpMethod;
    use serde_json::json;

    fn start(path: &str, body: Value) -> StartRequest {
        StartRequest {
            method: HttpMethod::Post,
            path: path.into(),
            query: BTreeMap::from([("zone".into(), "${self.spec.zone}".into())]),
            headers: BTreeMap::new(),
            body: Some(body),
        }
    }

    fn vars() -> Variables {
        let deps = BTreeMap::from([(
            "network".to_owned(),
            json!({"phase": "Succeeded", "resourceId": "net-1", "result": {"network": {"id": "net-1", "cidr": 24}}}),
        )]);
        variables(
            &deps,
            &json!({"metadata": {"name": "c"}, "spec": {"zone": "eu-1"}}),
        )
    }

    #[test]
    fn more_templates_than_the_limit_are_refused_before_compiling() {
        let fields: serde_json::Map<String, Value> = (0..=MAX_TEMPLATES)
            .map(|i| (format!("f{i}"), json!("${self.spec.zone}")))
            .collect();
        let many = start("clusters", Value::Object(fields));
        let problems = check(&many);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("66 ${…} templates, more than 64"),
            "{problems:?}"
        );
        assert!(render(&many, &vars()).is_err());
    }

    #[test]
    fn a_rendering_too_large_for_the_status_is_an_error_naming_start() {
        let deps = BTreeMap::from([(
            "big".to_owned(),
            json!({"phase": "Succeeded", "result": {"blob": "x".repeat(40_000)}}),
        )]);
        let vars = variables(
            &deps,
            &json!({"metadata": {"name": "c"}, "spec": {"zone": "eu-1"}}),
        );
        let twice = start(
            "clusters",
            json!({"a": "${deps.big.result.blob}", "b": "${deps.big.result.blob}"}),
        );
        let why = render(&twice, &vars).expect_err("80 kB rendered");
        assert!(
            why.contains("start renders to") && why.contains("65536"),
            "{why}"
        );
        let once = start("clusters", json!({"a": "${deps.big.result.blob}"}));
        assert!(render(&once, &vars).is_ok());
        let long_path = start("${deps.big.result.blob}", json!({}));
        let why = render(&long_path, &vars).expect_err("a 40 kB path");
        assert!(why.contains("start.path renders to"), "{why}");
    }

    #[test]
    fn pieces_split_text_and_expressions() {
        assert_eq!(
            pieces("a-${x}-b").unwrap(),
            vec![
                Piece::Text("a-".into()),
                Piece::Expr("x".into()),
                Piece::Text("-b".into())
            ]
        );
        assert_eq!(
            pieces("${ {'a': '}'}.a }").unwrap(),
            vec![Piece::Expr("{'a': '}'}.a".into())]
        );
        assert!(pieces("${x").is_err());
        assert_eq!(pieces("plain").unwrap(), vec![Piece::Text("plain".into())]);
    }

    #[test]
    fn a_single_expression_keeps_its_type() {
        let s = start(
            "networks",
            json!({"cidr": "${deps.network.result.network.cidr}", "net": {"ids": ["${deps.network.resourceId}"]}}),
        );
        let r = render(&s, &vars()).unwrap();
        assert_eq!(r.body, Some(json!({"cidr": 24, "net": {"ids": ["net-1"]}})));
        assert_eq!(r.query["zone"], "eu-1");
    }

    #[test]
    fn strings_are_interpolated() {
        let s = start(
            "networks/${deps.network.resourceId}/clusters",
            json!({"name": "${self.metadata.name}-in-${deps.network.resourceId} (${deps.network.result.network.cidr})", "n": 3}),
        );
        let r = render(&s, &vars()).unwrap();
        assert_eq!(r.path, "networks/net-1/clusters");
        assert_eq!(r.body, Some(json!({"name": "c-in-net-1 (24)", "n": 3})));
        assert!(is_templated(&s));
        let mut plain = start("x", json!({"a": "b"}));
        plain.query.clear();
        assert!(!is_templated(&plain));
    }

    #[test]
    fn errors_name_the_field_and_expression() {
        let s = start("x", json!({"a": "${deps.other.resourceId}"}));
        let e = render(&s, &vars()).unwrap_err();
        assert!(e.contains("start.body.a"), "{e}");
        assert!(e.contains("deps.other.resourceId"), "{e}");
        let bad = start("x", json!({"a": "${deps.network.(}", "b": "${unknown.x}"}));
        let problems = check(&bad);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("start.body.a"), "{problems:?}");
        assert!(check(&start("x", json!({"a": "${deps.network.resourceId}"}))).is_empty());
    }
}
