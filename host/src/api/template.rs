//! Chat templates: `messages` rendered into one prompt with the model's own
//! `chat_template` (from its `tokenizer_config.json`, Jinja, rendered by
//! minijinja with Python's string methods and `raise_exception`).
//!
//! The client node renders, so it needs the template: `[api.chat_templates]`
//! names a `tokenizer_config.json` (or its directory) per model id, and a
//! model the node serves itself is found in its own `[[backend.models]]`
//! directory. A model with neither gets a clear 400, never a guessed format.

use super::error::ApiError;
use super::request::Message;
use crate::config::Config;
use std::path::PathBuf;

/// The file a template is read from.
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// Most template instructions one render may run (a hostile or buggy
/// template cannot spin the node).
const FUEL: u64 = 2_000_000;

/// Where `model`'s `tokenizer_config.json` would be.
fn source(config: &Config, model: &str) -> Option<PathBuf> {
    let api = config.api.as_ref();
    let path = api
        .and_then(|a| a.chat_templates.get(model).cloned())
        .or_else(|| {
            config
                .backend
                .iter()
                .flat_map(|b| b.models.iter())
                .find(|m| m.id == model)
                .map(|m| m.path.clone())
        })?;
    Some(if path.is_dir() {
        path.join(TOKENIZER_CONFIG)
    } else if path.extension().is_some_and(|e| e == "gguf") {
        path.with_file_name(TOKENIZER_CONFIG)
    } else {
        path
    })
}

/// A token named in `tokenizer_config.json`: a string or `{"content": ...}`.
fn token(cfg: &serde_json::Value, key: &str) -> String {
    match cfg.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string(),
        None => String::new(),
    }
}

/// The `chat_template`: a string, or a list of named ones (`default` wins).
fn template_text(cfg: &serde_json::Value) -> Option<String> {
    match cfg.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => {
            let named = |n: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(|v| v.as_str()) == Some(n))
            };
            named("default")
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(String::from)
        }
        _ => None,
    }
}

/// Message content as text: a string, or the `text` of its text parts.
fn content_text(i: usize, m: &Message) -> Result<String, ApiError> {
    match &m.content {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Array(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(|t| t.as_str()), p.get("text")) {
                    (Some("text"), Some(serde_json::Value::String(t))) => out.push_str(t),
                    _ => {
                        return Err(ApiError::bad_field(
                            format!("messages[{i}].content[{j}]"),
                            "only text parts ({\"type\": \"text\", \"text\": ...}) are supported",
                        ))
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(ApiError::bad_field(
            format!("messages[{i}].content"),
            "must be a string or a list of text parts",
        )),
    }
}

/// Renders `messages` for `model` with a generation prompt at the end.
pub fn render(config: &Config, model: &str, messages: &[Message]) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_field(
            "messages",
            "`messages` must not be empty",
        ));
    }
    let mut msgs = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        if !matches!(
            m.role.as_str(),
            "system" | "user" | "assistant" | "tool" | "developer"
        ) {
            return Err(ApiError::bad_field(
                format!("messages[{i}].role"),
                format!("unknown role `{}`", m.role),
            ));
        }
        msgs.push(serde_json::json!({"role": m.role, "content": content_text(i, m)?}));
    }
    let no_template = |why: String| {
        ApiError::bad_request(
            "chat_template_missing",
            format!(
                "model `{model}` has no chat template on this node ({why}); use /v1/completions \
                 with a formatted prompt, or set [api.chat_templates] \"{model}\" to the model's \
                 tokenizer_config.json"
            ),
        )
    };
    let path = source(config, model).ok_or_else(|| no_template("none configured".into()))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| no_template(format!("cannot read {}: {e}", path.display())))?;
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| no_template(format!("{} is not JSON: {e}", path.display())))?;
    let template = template_text(&cfg)
        .ok_or_else(|| no_template(format!("{} has no `chat_template`", path.display())))?;
    render_template(
        &template,
        &msgs,
        &token(&cfg, "bos_token"),
        &token(&cfg, "eos_token"),
    )
    .map_err(|e| {
        ApiError::bad_request(
            "chat_template_error",
            format!(
                "rendering the chat template of `{model}` ({}): {e}",
                path.display()
            ),
        )
    })
}

/// Renders one template (the part that needs no files).
pub fn render_template(
    template: &str,
    messages: &[serde_json::Value],
    bos: &str,
    eos: &str,
) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_fuel(Some(FUEL));
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)?;
    env.get_template("chat")?.render(minijinja::context! {
        messages => minijinja::Value::from(minijinja::value::Serde(messages)),
        add_generation_prompt => true,
        bos_token => bos,
        eos_token => eos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_chatml_template_with_python_methods() {
        let t = "{% for m in messages %}<|{{ m.role }}|>{{ m.content.strip() }}\n{% endfor %}\
                 {% if add_generation_prompt %}<|assistant|>{% endif %}";
        let msgs = [serde_json::json!({"role": "user", "content": " hi "})];
        let out = render_template(t, &msgs, "<s>", "</s>").unwrap();
        assert_eq!(out, "<|user|>hi\n<|assistant|>");
    }

    #[test]
    fn raise_exception_and_endless_loops_are_errors() {
        let msgs = [serde_json::json!({"role": "user", "content": "x"})];
        let e =
            render_template("{{ raise_exception('no system role') }}", &msgs, "", "").unwrap_err();
        assert!(e.to_string().contains("no system role"), "{e}");
        let spin =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        assert!(render_template(spin, &msgs, "", "").is_err());
    }
}
