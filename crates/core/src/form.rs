//! Forms a backend asks to be answered with a decision, and the checks every answer
//! passes before a backend sees it.
//!
//! The check lives in the engine, not in each backend, so a window, a CLI flag and a
//! notification all meet the same rules, and what gets signed is exactly what the
//! backend receives (defaults filled in, types checked).

use serde_json::{Map, Value};
use thiserror::Error;

use crate::model::{Answer, FieldType, FormField, InputForm, Verdict};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AnswerError {
    #[error("this action offers no options to choose from; approve or deny it instead")]
    NothingToChoose,
    #[error("choose at least one option (offered: {})", offered.join(", "))]
    NoOption { offered: Vec<String> },
    #[error("`{option}` is not one of the options offered (offered: {})", offered.join(", "))]
    UnknownOption {
        option: String,
        offered: Vec<String>,
    },
    #[error("this step takes exactly one option, {0} were chosen")]
    OneOptionOnly(usize),
    #[error("options are picked with `choose`, not with approve or deny")]
    OptionsNeedChoose,
    #[error(
        "this step asks to choose among {}; none of them means \"{verdict}\", so use choose",
        quoted(offered)
    )]
    NoSuchVerdict {
        verdict: &'static str,
        offered: Vec<String>,
    },
    #[error("this action has no form, so it takes no fields (got `{0}`)")]
    NoForm(String),
    #[error("the form has no field `{field}` (fields: {})", fields.join(", "))]
    UnknownField { field: String, fields: Vec<String> },
    #[error("field `{field}` must be {expected}, got {got}")]
    WrongType {
        field: String,
        expected: String,
        got: String,
    },
    #[error("field `{0}` is required")]
    Required(String),
}

fn quoted(options: &[String]) -> String {
    let quoted: Vec<String> = options.iter().map(|o| format!("\"{o}\"")).collect();
    quoted.join(", ")
}

/// Checks `answer` against `form` for `verdict` and returns what will be signed and
/// sent: `None` for an action without a form, else the answer with the form's
/// defaults filled in for fields left out.
pub fn check_answer(
    form: Option<&InputForm>,
    verdict: Verdict,
    answer: Option<Answer>,
) -> Result<Option<Answer>, AnswerError> {
    let answer = answer.unwrap_or_default();
    let Some(form) = form else {
        if verdict == Verdict::Choose {
            return Err(AnswerError::NothingToChoose);
        }
        if !answer.options.is_empty() {
            return Err(AnswerError::OptionsNeedChoose);
        }
        if let Some(name) = answer.params.keys().next() {
            return Err(AnswerError::NoForm(name.clone()));
        }
        return Ok(None);
    };

    match verdict {
        Verdict::Choose => {
            if form.options.is_empty() {
                return Err(AnswerError::NothingToChoose);
            }
            if answer.options.is_empty() {
                return Err(AnswerError::NoOption {
                    offered: form.options.clone(),
                });
            }
            if let Some(unknown) = answer.options.iter().find(|o| !form.options.contains(o)) {
                return Err(AnswerError::UnknownOption {
                    option: unknown.clone(),
                    offered: form.options.clone(),
                });
            }
            let mut distinct = answer.options.clone();
            distinct.sort();
            distinct.dedup();
            if !form.multiple && distinct.len() != 1 {
                return Err(AnswerError::OneOptionOnly(distinct.len()));
            }
        }
        Verdict::Approve | Verdict::Deny => {
            if !answer.options.is_empty() {
                return Err(AnswerError::OptionsNeedChoose);
            }
            let stands_for = match verdict {
                Verdict::Approve => &form.approve_option,
                _ => &form.deny_option,
            };
            if !form.options.is_empty() && stands_for.is_none() {
                return Err(AnswerError::NoSuchVerdict {
                    verdict: verdict.as_str(),
                    offered: form.options.clone(),
                });
            }
        }
    }

    let names = || {
        form.fields
            .iter()
            .map(|f| f.name.clone())
            .collect::<Vec<_>>()
    };
    for (name, value) in &answer.params {
        let field = form
            .fields
            .iter()
            .find(|f| &f.name == name)
            .ok_or_else(|| AnswerError::UnknownField {
                field: name.clone(),
                fields: names(),
            })?;
        check_value(field, value)?;
    }

    let mut checked = answer;
    for field in &form.fields {
        if checked.params.contains_key(&field.name) {
            continue;
        }
        match &field.default {
            Some(default) => {
                checked.params.insert(field.name.clone(), default.clone());
            }
            // With approve or deny the verdict itself may be the answer to a required
            // field (Prefect's `approved`), which only the backend can fill in; the
            // backend's own check then names anything still missing. A choice is the
            // person's whole answer, so it must be complete here.
            None if field.required && verdict == Verdict::Choose => {
                return Err(AnswerError::Required(field.name.clone()));
            }
            None => {}
        }
    }
    Ok(Some(checked))
}

fn check_value(field: &FormField, value: &Value) -> Result<(), AnswerError> {
    let ok = match (field.field_type, value) {
        (_, Value::Null) => !field.required,
        (FieldType::Text, Value::String(_)) => true,
        (FieldType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (FieldType::Number, Value::Number(_)) => true,
        (FieldType::Boolean, Value::Bool(_)) => true,
        (FieldType::Choice, Value::String(s)) => field.choices.contains(s),
        (FieldType::Json, _) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(AnswerError::WrongType {
            field: field.name.clone(),
            expected: expected(field),
            got: describe(value),
        })
    }
}

fn expected(field: &FormField) -> String {
    match field.field_type {
        FieldType::Text => "text".into(),
        FieldType::Integer => "a whole number".into(),
        FieldType::Number => "a number".into(),
        FieldType::Boolean => "true or false".into(),
        FieldType::Choice => format!("one of {}", field.choices.join(", ")),
        FieldType::Json => "JSON".into(),
    }
}

fn describe(value: &Value) -> String {
    let mut text = value.to_string();
    if text.chars().count() > 40 {
        text = text.chars().take(40).collect::<String>() + "…";
    }
    text
}

/// Reads a field value typed on a command line (`--param name=value`) as the form's
/// field type says: `3` is a number for an integer field and text for a text field.
pub fn parse_param(form: Option<&InputForm>, name: &str, raw: &str) -> Result<Value, AnswerError> {
    let Some(form) = form else {
        return Err(AnswerError::NoForm(name.to_owned()));
    };
    let field =
        form.fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| AnswerError::UnknownField {
                field: name.to_owned(),
                fields: form.fields.iter().map(|f| f.name.clone()).collect(),
            })?;
    let wrong = || AnswerError::WrongType {
        field: name.to_owned(),
        expected: expected(field),
        got: describe(&Value::String(raw.to_owned())),
    };
    let value = match field.field_type {
        FieldType::Text | FieldType::Choice => Value::String(raw.to_owned()),
        FieldType::Integer => Value::from(raw.trim().parse::<i64>().map_err(|_| wrong())?),
        FieldType::Number => {
            let n: f64 = raw.trim().parse().map_err(|_| wrong())?;
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .ok_or_else(wrong)?
        }
        FieldType::Boolean => match raw.trim() {
            "true" | "yes" | "y" => Value::Bool(true),
            "false" | "no" | "n" => Value::Bool(false),
            _ => return Err(wrong()),
        },
        FieldType::Json => serde_json::from_str(raw).map_err(|_| wrong())?,
    };
    check_value(field, &value)?;
    Ok(value)
}

/// The field a JSON Schema property describes (`type`, `enum`, `title`,
/// `description`, `default`), as Prefect run-input forms and Airflow params state them.
pub fn field_from_schema(name: &str, schema: &Value, required: bool) -> FormField {
    let choices: Vec<String> = schema
        .get("enum")
        .and_then(Value::as_array)
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let ty = match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        // `["string", "null"]`: an optional field of the first non-null type.
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    };
    let field_type = if !choices.is_empty() {
        FieldType::Choice
    } else {
        match ty {
            Some("string") => FieldType::Text,
            Some("integer") => FieldType::Integer,
            Some("number") => FieldType::Number,
            Some("boolean") => FieldType::Boolean,
            _ => FieldType::Json,
        }
    };
    let text = |key: &str| {
        schema
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let title = text("title");
    FormField {
        name: name.to_owned(),
        label: if title.is_empty() {
            name.to_owned()
        } else {
            title
        },
        description: text("description"),
        field_type,
        choices,
        required,
        default: schema.get("default").cloned(),
    }
}

/// The fields of an object JSON Schema, in the order its properties state (`position`
/// when given, as Prefect's forms number them, else as written).
pub fn fields_from_object_schema(schema: &Value) -> Vec<FormField> {
    let Some(Value::Object(props)) = schema.get("properties") else {
        return Vec::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut ordered: Vec<(&String, &Value)> = props.iter().collect();
    ordered.sort_by_key(|(_, p)| {
        p.get("position")
            .and_then(Value::as_i64)
            .unwrap_or(i64::MAX)
    });
    ordered
        .into_iter()
        .map(|(name, prop)| {
            field_from_schema(
                name,
                &resolve_ref(schema, prop),
                required.contains(&name.as_str()),
            )
        })
        .collect()
}

/// Follows a local `$ref` (`#/definitions/X` or `#/$defs/X`), as pydantic writes enums.
fn resolve_ref(root: &Value, prop: &Value) -> Value {
    let target = prop
        .get("$ref")
        .or_else(|| prop.get("allOf")?.get(0)?.get("$ref"))
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/"))
        .and_then(|path| {
            path.split('/')
                .try_fold(root, |node, part| node.get(part))
                .cloned()
        });
    match (target, prop) {
        (Some(Value::Object(mut resolved)), Value::Object(own)) => {
            // The property's own title, description and default win over the target's.
            for (k, v) in own {
                if k != "$ref" && k != "allOf" {
                    resolved.insert(k.clone(), v.clone());
                }
            }
            Value::Object(resolved)
        }
        _ => prop.clone(),
    }
}

/// The initial values of a form's fields, as a JSON object.
pub fn defaults(form: &InputForm) -> Map<String, Value> {
    form.fields
        .iter()
        .filter_map(|f| Some((f.name.clone(), f.default.clone()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form() -> InputForm {
        InputForm {
            options: vec!["Deploy EU".into(), "Deploy US".into(), "Skip".into()],
            multiple: false,
            default_options: vec!["Skip".into()],
            approve_option: None,
            deny_option: None,
            fields: vec![
                FormField {
                    name: "replicas".into(),
                    label: "Replicas".into(),
                    description: String::new(),
                    field_type: FieldType::Integer,
                    choices: vec![],
                    required: true,
                    default: None,
                },
                FormField {
                    name: "note".into(),
                    label: "note".into(),
                    description: String::new(),
                    field_type: FieldType::Text,
                    choices: vec![],
                    required: false,
                    default: Some(json!("none")),
                },
            ],
        }
    }

    fn answer(options: &[&str], params: &[(&str, Value)]) -> Option<Answer> {
        Some(Answer {
            options: options.iter().map(|s| s.to_string()).collect(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        })
    }

    #[test]
    fn a_choice_is_checked_and_defaults_are_filled_in() {
        let checked = check_answer(
            Some(&form()),
            Verdict::Choose,
            answer(&["Deploy US"], &[("replicas", json!(3))]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(checked.options, ["Deploy US"]);
        assert_eq!(checked.params["replicas"], json!(3));
        assert_eq!(checked.params["note"], json!("none"));
    }

    #[test]
    fn wrong_choices_are_refused_naming_what_is_wrong() {
        let f = form();
        let err = |a| check_answer(Some(&f), Verdict::Choose, a).unwrap_err();
        assert_eq!(
            err(answer(&[], &[])),
            AnswerError::NoOption {
                offered: f.options.clone()
            }
        );
        assert!(matches!(
            err(answer(&["Deploy Mars"], &[("replicas", json!(1))])),
            AnswerError::UnknownOption { option, .. } if option == "Deploy Mars"
        ));
        assert_eq!(
            err(answer(&["Deploy EU", "Skip"], &[("replicas", json!(1))])),
            AnswerError::OneOptionOnly(2)
        );
        assert!(matches!(
            err(answer(&["Skip"], &[("replicas", json!("three"))])),
            AnswerError::WrongType { field, .. } if field == "replicas"
        ));
        assert_eq!(
            err(answer(&["Skip"], &[])),
            AnswerError::Required("replicas".into())
        );
        assert!(matches!(
            err(answer(&["Skip"], &[("replicas", json!(1)), ("color", json!("red"))])),
            AnswerError::UnknownField { field, .. } if field == "color"
        ));
        let mut multi = form();
        multi.multiple = true;
        assert!(check_answer(
            Some(&multi),
            Verdict::Choose,
            answer(&["Deploy EU", "Deploy US"], &[("replicas", json!(1))])
        )
        .is_ok());
    }

    #[test]
    fn approve_and_deny_take_no_options_and_leave_required_fields_to_the_verdict() {
        let mut f = form();
        assert_eq!(
            check_answer(Some(&f), Verdict::Approve, answer(&["Skip"], &[])).unwrap_err(),
            AnswerError::OptionsNeedChoose
        );
        // A step whose options mean nothing like yes or no is only chosen on.
        assert!(matches!(
            check_answer(Some(&f), Verdict::Approve, None).unwrap_err(),
            AnswerError::NoSuchVerdict {
                verdict: "approve",
                ..
            }
        ));
        f.approve_option = Some("Deploy EU".into());
        f.deny_option = Some("Skip".into());
        let denied = check_answer(Some(&f), Verdict::Deny, None)
            .unwrap()
            .unwrap();
        assert!(denied.options.is_empty());
        assert_eq!(denied.params.get("note"), Some(&json!("none")));
        let approved = check_answer(Some(&f), Verdict::Approve, None)
            .unwrap()
            .unwrap();
        assert!(!approved.params.contains_key("replicas"));
        assert_eq!(
            check_answer(None, Verdict::Choose, None).unwrap_err(),
            AnswerError::NothingToChoose
        );
        assert_eq!(check_answer(None, Verdict::Approve, None).unwrap(), None);
        assert!(matches!(
            check_answer(None, Verdict::Approve, answer(&[], &[("x", json!(1))])).unwrap_err(),
            AnswerError::NoForm(_)
        ));
    }

    #[test]
    fn command_line_values_are_read_as_the_field_type_says() {
        let f = form();
        assert_eq!(parse_param(Some(&f), "replicas", "3").unwrap(), json!(3));
        assert_eq!(parse_param(Some(&f), "note", "3").unwrap(), json!("3"));
        assert!(parse_param(Some(&f), "replicas", "three").is_err());
        assert!(parse_param(Some(&f), "nope", "1").is_err());
    }

    #[test]
    fn json_schema_properties_become_typed_fields_in_position_order() {
        let schema = json!({
            "type": "object",
            "required": ["approved"],
            "properties": {
                "comment": {"type": "string", "title": "Comment", "position": 1},
                "approved": {"type": "boolean", "position": 0, "default": false},
                "region": {"allOf": [{"$ref": "#/definitions/Region"}], "position": 2},
                "count": {"type": ["integer", "null"], "position": 3}
            },
            "definitions": {"Region": {"enum": ["eu", "us"], "title": "Region"}}
        });
        let fields = fields_from_object_schema(&schema);
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["approved", "comment", "region", "count"]);
        assert_eq!(fields[0].field_type, FieldType::Boolean);
        assert!(fields[0].required);
        assert_eq!(fields[1].label, "Comment");
        assert_eq!(fields[2].field_type, FieldType::Choice);
        assert_eq!(fields[2].choices, ["eu", "us"]);
        assert_eq!(fields[3].field_type, FieldType::Integer);
    }
}
