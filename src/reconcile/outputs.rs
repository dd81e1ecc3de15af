//! `spec.outputs`, the pure part: whether they are due, what each key's CEL expression gives
//! over the result, the checks the admission webhook runs, and the `OutputsPublished`
//! condition. Writing the ConfigMap and Secret is the controller's (`controller::outputs`).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::Value;

use super::conditions;
use crate::api::{
    LongRunningOperationSpec, LongRunningOperationStatus, OutputTarget, Outputs, Phase,
};
use crate::cel::{EvalError, Expression, Variables};

/// The condition saying whether `spec.outputs` was written for the current generation.
pub const OUTPUTS_PUBLISHED: &str = "OutputsPublished";
/// The variables of an output expression.
pub const VARIABLES: &[&str] = &["result", "status"];

/// The problems of `spec.outputs` expressions (for the admission webhook).
pub fn check(outputs: &Outputs) -> Vec<String> {
    let mut problems = Vec::new();
    for (field, target) in [
        ("spec.outputs.configMap", &outputs.config_map),
        ("spec.outputs.secret", &outputs.secret),
    ] {
        for (key, source) in target.iter().flat_map(|t| t.data.iter()) {
            if let Err(e) = Expression::compile(source, VARIABLES) {
                problems.push(format!("{field}.data.{key}: does not compile: {e}"));
            }
        }
    }
    problems
}

/// Whether the outputs of a succeeded operation still have to be written for `generation`.
pub fn pending(
    spec: &LongRunningOperationSpec,
    generation: Option<i64>,
    status: &LongRunningOperationStatus,
) -> bool {
    spec.outputs.is_some()
        && status.phase == Some(Phase::Succeeded)
        && !conditions::find(&status.conditions, OUTPUTS_PUBLISHED)
            .is_some_and(|c| c.status == "True" && c.observed_generation == generation)
}

/// One ConfigMap or Secret to write: its name and data.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The object's name.
    pub name: String,
    /// Each key's value.
    pub data: BTreeMap<String, String>,
}

/// The outputs rendered from a result: each target, or why it cannot be (an expression failed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rendered {
    /// The ConfigMap, if configured.
    pub config_map: Option<Result<Target, String>>,
    /// The Secret, if configured.
    pub secret: Option<Result<Target, String>>,
}

/// Evaluates every key over `result` (the full result when just observed, else the status's)
/// and `status`. A failure names the key (and, for a ConfigMap only, the reason: a Secret
/// expression's error might quote the value).
pub fn render(
    outputs: &Outputs,
    status: &LongRunningOperationStatus,
    result: Option<&Value>,
) -> Rendered {
    let mut vars = Variables::new();
    vars.bind_json(
        "result",
        result.or(status.result.as_ref()).unwrap_or(&Value::Null),
    );
    vars.bind_json(
        "status",
        &serde_json::to_value(status).unwrap_or(Value::Null),
    );
    Rendered {
        config_map: outputs
            .config_map
            .as_ref()
            .map(|t| evaluate("configMap", t, &vars, false)),
        secret: outputs
            .secret
            .as_ref()
            .map(|t| evaluate("secret", t, &vars, true)),
    }
}

fn evaluate(
    what: &str,
    target: &OutputTarget,
    vars: &Variables,
    secret: bool,
) -> Result<Target, String> {
    let data = target
        .data
        .iter()
        .map(|(key, source)| {
            let value = Expression::compile(source, VARIABLES)
                .map_err(|e| format!("{what} key {key}: does not compile: {e}"))?
                .evaluate_json(vars)
                .map_err(|e| match e {
                    // Says what it would cost, never a value: shown for a Secret too.
                    EvalError::OverBudget(_) => format!("{what} key {key}: {e}"),
                    _ if secret => format!("{what} key {key}: the expression failed"),
                    _ => format!("{what} key {key}: {e}"),
                })?;
            let text = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            Ok((key.clone(), text))
        })
        .collect::<Result<BTreeMap<_, _>, String>>()?;
    Ok(Target {
        name: target.name.clone(),
        data,
    })
}

/// Why an output could not be written.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteFailure {
    /// The condition's reason: `OutputConflict` (an object of that name that the operation does
    /// not control exists; it is left untouched) or `OutputError`.
    pub reason: &'static str,
    /// What happened and what to do.
    pub message: String,
}

impl WriteFailure {
    /// An object of the target's name exists and is not the operation's.
    pub fn conflict(message: impl Into<String>) -> Self {
        WriteFailure {
            reason: "OutputConflict",
            message: message.into(),
        }
    }

    /// The API server refused or failed the write.
    pub fn error(message: impl Into<String>) -> Self {
        WriteFailure {
            reason: "OutputError",
            message: message.into(),
        }
    }
}

/// Records how publishing went as the `OutputsPublished` condition: `written` names what was
/// written (`ConfigMap x`, `Secret y`); the first failure of `rendered` (or of the write,
/// `write_error`) makes it `False`. Returns whether it is `True`.
pub fn record(
    status: &mut LongRunningOperationStatus,
    rendered: &Rendered,
    written: &[String],
    write_error: Option<&WriteFailure>,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let failure = [&rendered.config_map, &rendered.secret]
        .into_iter()
        .flatten()
        .find_map(|r| r.as_ref().err().cloned())
        .map(WriteFailure::error)
        .or_else(|| write_error.cloned());
    let (value, reason, message) = match failure {
        None => (
            true,
            "Published",
            format!("wrote {}", written.join(" and ")),
        ),
        Some(why) => (
            false,
            why.reason,
            format!("outputs not written: {}", why.message),
        ),
    };
    conditions::upsert(
        &mut status.conditions,
        OUTPUTS_PUBLISHED,
        value,
        reason,
        &message,
        generation,
        now,
    );
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outputs(config_map: &[(&str, &str)], secret: &[(&str, &str)]) -> Outputs {
        let target = |name: &str, data: &[(&str, &str)]| OutputTarget {
            name: name.into(),
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        Outputs {
            config_map: (!config_map.is_empty()).then(|| target("cm", config_map)),
            secret: (!secret.is_empty()).then(|| target("s", secret)),
        }
    }

    #[test]
    fn keys_are_evaluated_over_the_result_and_a_secret_error_quotes_nothing() {
        let status = LongRunningOperationStatus::default();
        let result = json!({"endpoint": "https://db", "port": 5432, "password": "hunter2"});
        let rendered = render(
            &outputs(
                &[("url", "result.endpoint"), ("port", "result.port")],
                &[("pw", "result.password + 1")],
            ),
            &status,
            Some(&result),
        );
        let cm = rendered.config_map.clone().unwrap().unwrap();
        assert_eq!(cm.data["url"], "https://db");
        assert_eq!(cm.data["port"], "5432");
        let secret_error = rendered.secret.clone().unwrap().unwrap_err();
        assert_eq!(secret_error, "secret key pw: the expression failed");
        let mut status = status;
        record(
            &mut status,
            &rendered,
            &["ConfigMap cm".into()],
            None,
            Some(1),
            Timestamp::UNIX_EPOCH,
        );
        let c = conditions::find(&status.conditions, OUTPUTS_PUBLISHED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "OutputError")
        );
        assert!(!c.message.contains("hunter2"));
    }

    #[test]
    fn a_conflict_is_its_own_reason_and_success_names_what_was_written() {
        let rendered = render(
            &outputs(&[("url", "result.endpoint")], &[]),
            &LongRunningOperationStatus::default(),
            Some(&json!({"endpoint": "https://db"})),
        );
        let mut status = LongRunningOperationStatus::default();
        let conflict = WriteFailure::conflict("ConfigMap cm exists");
        let published = record(
            &mut status,
            &rendered,
            &[],
            Some(&conflict),
            Some(1),
            Timestamp::UNIX_EPOCH,
        );
        assert!(!published);
        let c = conditions::find(&status.conditions, OUTPUTS_PUBLISHED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "OutputConflict")
        );
        assert!(c.message.contains("ConfigMap cm exists"), "{}", c.message);
        let published = record(
            &mut status,
            &rendered,
            &["ConfigMap cm".into()],
            None,
            Some(1),
            Timestamp::UNIX_EPOCH,
        );
        assert!(published);
        let c = conditions::find(&status.conditions, OUTPUTS_PUBLISHED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.message.as_str()),
            ("True", "wrote ConfigMap cm")
        );
    }

    #[test]
    fn checks_name_the_field_of_an_expression_that_does_not_compile() {
        let problems = check(&outputs(&[("a", "result.")], &[]));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("spec.outputs.configMap.data.a: does not compile"));
    }
}
