//! Multi-round-trip requests (MCP 2026-07-28): a tool that needs the
//! user's answer, a model's completion or the client's roots returns
//! `resultType: "input_required"` with `inputRequests`, and the client
//! calls again with the same arguments plus `inputResponses`.
//!
//! The server keeps nothing between rounds (a fresh instance may answer
//! each, on any host): what a later round needs travels in `requestState`,
//! which the client echoes back untouched. It is signed —
//! `base64url(JSON) "." base64url(HMAC-SHA256(key, JSON))`, the key read
//! from the `MCP_STATE_KEY` environment variable (a tenant secret) — so a
//! client cannot forge or alter it, and a state minted for one tool is
//! refused by another.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::rpc::Reply;

/// Where the signing key comes from.
const KEY_VARIABLE: &str = "MCP_STATE_KEY";

const INVALID_PARAMS: i64 = -32602;

/// The tools that ask for input.
pub fn tools() -> Vec<Value> {
    let tool = |name: &str, description: &str| json!({ "name": name, "description": description, "inputSchema": { "type": "object", "properties": {} } });
    vec![
        tool(
            "test_input_required_result_elicitation",
            "Asks the user's name, then greets them",
        ),
        tool(
            "test_input_required_result_sampling",
            "Asks the client's model a question",
        ),
        tool(
            "test_input_required_result_list_roots",
            "Asks for the client's roots",
        ),
        tool(
            "test_input_required_result_request_state",
            "Asks for confirmation, with signed state",
        ),
        tool(
            "test_input_required_result_multiple_inputs",
            "Asks for a name, a greeting and the roots at once",
        ),
        tool(
            "test_input_required_result_multi_round",
            "Asks two questions, one round each",
        ),
        tool(
            "test_input_required_result_tampered_state",
            "Refuses a requestState that was altered",
        ),
        tool(
            "test_input_required_result_capabilities",
            "Asks only for what the client declared it can answer",
        ),
        tool(
            "test_streaming_elicitation",
            "Asks for confirmation (an input request, never a server request)",
        ),
    ]
}

/// The prompt that asks for input first.
pub fn prompt_definition() -> Value {
    json!({ "name": "test_input_required_result_prompt", "description": "A prompt that asks the user for context first" })
}

/// An `elicitation/create` input request for one required field.
pub fn elicit(message: &str, field: &str, kind: &str) -> Value {
    json!({
        "method": "elicitation/create",
        "params": {
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": { field: { "type": kind } },
                "required": [field],
            },
        },
    })
}

fn sample(text: &str, max_tokens: u64) -> Value {
    json!({
        "method": "sampling/createMessage",
        "params": {
            "messages": [{ "role": "user", "content": { "type": "text", "text": text } }],
            "maxTokens": max_tokens,
        },
    })
}

fn roots() -> Value {
    json!({ "method": "roots/list", "params": {} })
}

fn input_required(requests: Value, state: Option<String>) -> Reply {
    let mut result = json!({ "resultType": "input_required", "inputRequests": requests });
    if let Some(state) = state {
        result["requestState"] = json!(state);
    }
    println!(
        "[INFO] Input required: {}",
        result["inputRequests"]
            .as_object()
            .map(|r| r.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );
    Reply::Result(result)
}

fn text(text: String) -> Reply {
    println!("[INFO] Input received; answered: {text}");
    Reply::Result(json!({ "content": [{ "type": "text", "text": text }] }))
}

fn invalid(message: String) -> Reply {
    eprintln!("[WARN] {message}");
    Reply::Error(INVALID_PARAMS, message)
}

/// The client's answers: `None` when there are none yet, an error when
/// they are not an object of answers.
fn responses(params: &Value) -> Result<Option<&serde_json::Map<String, Value>>, Reply> {
    match params.get("inputResponses") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(answers)) => Ok(Some(answers)),
        Some(other) => Err(invalid(format!(
            "inputResponses must be an object of answers by key, not {other}"
        ))),
    }
}

/// One answer, which must be an object (an elicitation, sampling or roots
/// result).
fn answer<'a>(
    answers: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Value>, Reply> {
    match answers.get(key) {
        None => Ok(None),
        Some(value @ Value::Object(_)) => Ok(Some(value)),
        Some(other) => Err(invalid(format!(
            "inputResponses.{key} must be a result object, not {other}"
        ))),
    }
}

fn name_from(elicited: &Value, field: &str) -> String {
    match elicited["action"].as_str() {
        Some("accept") | None => elicited["content"][field]
            .as_str()
            .map_or_else(|| elicited["content"][field].to_string(), str::to_string),
        Some(other) => format!("({other})"),
    }
}

fn sampled(result: &Value) -> String {
    result["content"]["text"]
        .as_str()
        .unwrap_or("(no text)")
        .to_string()
}

fn root_uris(result: &Value) -> String {
    result["roots"]
        .as_array()
        .map(|roots| {
            roots
                .iter()
                .filter_map(|r| r["uri"].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Runs a tool of this module (`None`: not one of them).
pub fn call(name: &str, params: &Value, capabilities: &Value) -> Option<Reply> {
    let reply = match name {
        "test_input_required_result_elicitation" => single(
            params,
            "user_name",
            || elicit("What is your name?", "name", "string"),
            |a| format!("Hello, {}!", name_from(a, "name")),
        ),
        "test_input_required_result_sampling" => single(
            params,
            "capital_question",
            || sample("What is the capital of France?", 100),
            |a| format!("The model answered: {}", sampled(a)),
        ),
        "test_input_required_result_list_roots" => single(params, "client_roots", roots, |a| {
            format!("Client roots: {}", root_uris(a))
        }),
        "test_streaming_elicitation" => single(
            params,
            "confirm",
            || elicit("Please confirm", "ok", "boolean"),
            |a| format!("Confirmed: {}", name_from(a, "ok")),
        ),
        "test_input_required_result_request_state"
        | "test_input_required_result_tampered_state" => stateful_single(name, params),
        "test_input_required_result_multiple_inputs" => multiple(name, params),
        "test_input_required_result_multi_round" => multi_round(name, params),
        "test_input_required_result_capabilities" => by_capability(params, capabilities),
        _ => return None,
    };
    Some(reply)
}

/// One question, no state: asked until answered.
fn single(
    params: &Value,
    key: &str,
    question: impl Fn() -> Value,
    finish: impl Fn(&Value) -> String,
) -> Reply {
    let answers = match responses(params) {
        Ok(answers) => answers,
        Err(reply) => return reply,
    };
    let found = match answers.map(|a| answer(a, key)).transpose() {
        Ok(found) => found.flatten(),
        Err(reply) => return reply,
    };
    match found {
        Some(given) => text(finish(given)),
        None => input_required(json!({ key: question() }), None),
    }
}

/// One question whose second round must bring back the signed state.
fn stateful_single(tool: &str, params: &Value) -> Reply {
    let answers = match responses(params) {
        Ok(answers) => answers,
        Err(reply) => return reply,
    };
    let ask = |round: u64| match sign(tool, json!({ "round": round })) {
        Ok(state) => input_required(
            json!({ "confirm": elicit("Please confirm", "ok", "boolean") }),
            Some(state),
        ),
        Err(reply) => reply,
    };
    let Some(answers) = answers else {
        return ask(1);
    };
    match answer(answers, "confirm") {
        Err(reply) => reply,
        Ok(None) => ask(1),
        Ok(Some(given)) => match verify(tool, params) {
            Ok(_) => text(format!(
                "state-ok: the requestState was ours and intact; confirmed {}",
                name_from(given, "ok")
            )),
            Err(reply) => reply,
        },
    }
}

/// Three questions at once; asked again for whatever is still missing.
fn multiple(tool: &str, params: &Value) -> Reply {
    let answers = match responses(params) {
        Ok(answers) => answers,
        Err(reply) => return reply,
    };
    let questions = [
        ("user_name", elicit("What is your name?", "name", "string")),
        ("greeting", sample("Generate a greeting", 50)),
        ("client_roots", roots()),
    ];
    let empty = serde_json::Map::new();
    let given = answers.unwrap_or(&empty);
    let mut missing = serde_json::Map::new();
    for (key, question) in questions {
        match answer(given, key) {
            Err(reply) => return reply,
            Ok(None) => {
                missing.insert(key.to_string(), question);
            }
            Ok(Some(_)) => {}
        }
    }
    if answers.is_some()
        && let Err(reply) = verify(tool, params)
    {
        return reply;
    }
    if !missing.is_empty() {
        return match sign(tool, json!({ "round": 1 })) {
            Ok(state) => input_required(Value::Object(missing), Some(state)),
            Err(reply) => reply,
        };
    }
    text(format!(
        "{} — {} (roots: {})",
        sampled(&given["greeting"]),
        name_from(&given["user_name"], "name"),
        root_uris(&given["client_roots"])
    ))
}

/// Two rounds: a name, then a colour; the name travels in the state.
fn multi_round(tool: &str, params: &Value) -> Reply {
    let answers = match responses(params) {
        Ok(answers) => answers,
        Err(reply) => return reply,
    };
    let step1 = || match sign(tool, json!({ "round": 1 })) {
        Ok(state) => input_required(
            json!({ "step1": elicit("Step 1: What is your name?", "name", "string") }),
            Some(state),
        ),
        Err(reply) => reply,
    };
    let Some(answers) = answers else {
        return step1();
    };
    let state = match verify(tool, params) {
        Ok(state) => state,
        Err(reply) => return reply,
    };
    match state["round"].as_u64() {
        Some(1) => match answer(answers, "step1") {
            Err(reply) => reply,
            Ok(None) => step1(),
            Ok(Some(given)) => {
                let name = name_from(given, "name");
                match sign(tool, json!({ "round": 2, "name": name })) {
                    Ok(state) => input_required(
                        json!({ "step2": elicit("Step 2: What is your favorite color?", "color", "string") }),
                        Some(state),
                    ),
                    Err(reply) => reply,
                }
            }
        },
        Some(2) => match answer(answers, "step2") {
            Err(reply) => reply,
            Ok(None) => invalid("round 2 needs inputResponses.step2".into()),
            Ok(Some(given)) => text(format!(
                "{} likes {}",
                state["name"].as_str().unwrap_or("someone"),
                name_from(given, "color")
            )),
        },
        _ => invalid("requestState names no round of this tool".into()),
    }
}

/// Asks only for what the client said it can answer.
fn by_capability(params: &Value, capabilities: &Value) -> Reply {
    let answers = match responses(params) {
        Ok(answers) => answers,
        Err(reply) => return reply,
    };
    if let Some(answers) = answers
        && !answers.is_empty()
    {
        let keys: Vec<&str> = answers.keys().map(String::as_str).collect();
        return text(format!("Received answers for: {}", keys.join(", ")));
    }
    let mut requests = serde_json::Map::new();
    if capabilities.get("elicitation").is_some() {
        requests.insert(
            "user_name".into(),
            elicit("What is your name?", "name", "string"),
        );
    }
    if capabilities.get("sampling").is_some() {
        requests.insert("greeting".into(), sample("Generate a greeting", 50));
    }
    if capabilities.get("roots").is_some() {
        requests.insert("client_roots".into(), roots());
    }
    if requests.is_empty() {
        return text("The client declared no capability to answer with; nothing asked".into());
    }
    input_required(Value::Object(requests), None)
}

/// `prompts/get` of the prompt that asks first (`None`: another prompt).
pub fn prompt(params: &Value) -> Option<Reply> {
    if params["name"] != "test_input_required_result_prompt" {
        return None;
    }
    let answers = match responses(params) {
        Ok(answers) => answers,
        Err(reply) => return Some(reply),
    };
    let found = match answers.map(|a| answer(a, "user_context")).transpose() {
        Ok(found) => found.flatten(),
        Err(reply) => return Some(reply),
    };
    Some(match found {
        None => input_required(
            json!({ "user_context": elicit("What context should the prompt use?", "context", "string") }),
            None,
        ),
        Some(given) => Reply::Result(json!({
            "description": "A prompt written with the user's context",
            "messages": [{
                "role": "user",
                "content": { "type": "text", "text": format!("Use this context: {}", name_from(given, "context")) },
            }],
        })),
    })
}

/// The shortest key `requestState` is signed with.
const MIN_KEY_BYTES: usize = 16;

fn key() -> Result<Vec<u8>, Reply> {
    let why = match std::env::var(KEY_VARIABLE) {
        Ok(key) if key.len() >= MIN_KEY_BYTES => return Ok(key.into_bytes()),
        Ok(key) if key.is_empty() => format!("{KEY_VARIABLE} is empty"),
        Ok(key) => format!(
            "{KEY_VARIABLE} is too short: {} bytes, it must be at least {MIN_KEY_BYTES}",
            key.len()
        ),
        Err(_) => format!("{KEY_VARIABLE} is not set (a secret of {MIN_KEY_BYTES} bytes or more)"),
    };
    eprintln!("[ERROR] {why}: cannot sign requestState");
    Err(Reply::Error(
        -32603,
        format!("this server cannot keep state between rounds: {why}"),
    ))
}

fn mac(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(payload);
    mac.finalize().into_bytes().to_vec()
}

/// `requestState` for `tool` carrying `data` (also a task's id,
/// `tasks.rs`).
pub fn sign(tool: &str, data: Value) -> Result<String, Reply> {
    let key = key()?;
    let payload = json!({ "tool": tool, "data": data }).to_string();
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(mac(&key, payload.as_bytes()))
    ))
}

/// The data of a request's `requestState`, if it is one this server
/// signed for `tool` and nobody changed.
fn verify(tool: &str, params: &Value) -> Result<Value, Reply> {
    let Some(state) = params["requestState"].as_str() else {
        eprintln!("[WARN] Refused requestState: missing");
        return Err(Reply::Error(
            INVALID_PARAMS,
            "Invalid requestState: missing (this round needs the state of the last one)".into(),
        ));
    };
    verify_state(tool, state)
}

/// The data `state` carries, if this server signed it for `tool` and
/// nobody changed it.
pub fn verify_state(tool: &str, state: &str) -> Result<Value, Reply> {
    let key = key()?;
    let refused = |why: &str| {
        eprintln!("[WARN] Refused requestState: {why}");
        Reply::Error(INVALID_PARAMS, format!("Invalid requestState: {why}"))
    };
    let Some((payload, signature)) = state.split_once('.') else {
        return Err(refused("not a state this server issued"));
    };
    let (Ok(payload), Ok(signature)) = (
        URL_SAFE_NO_PAD.decode(payload),
        URL_SAFE_NO_PAD.decode(signature),
    ) else {
        return Err(refused("not a state this server issued"));
    };
    let mut check = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    check.update(&payload);
    if check.verify_slice(&signature).is_err() {
        return Err(refused(
            "integrity check failed (altered or signed with another key)",
        ));
    }
    let state: Value = serde_json::from_slice(&payload).map_err(|_| refused("unreadable"))?;
    if state["tool"] != tool {
        return Err(refused("issued for another tool"));
    }
    Ok(state["data"].clone())
}
