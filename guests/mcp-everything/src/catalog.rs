//! What the server offers: tools, resources, prompts and completions, with
//! the names and contents the conformance suite expects.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::rpc::{EventStream, Reply};

/// A 1x1 red PNG.
const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

/// Tools that need the client to answer a request of ours (sampling,
/// elicitation): the answer would arrive in a new HTTP request, served by a
/// fresh instance that knows nothing of this one.
const NEEDS_CLIENT_ROUND_TRIP: [&str; 4] = [
    "test_sampling",
    "test_elicitation",
    "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums",
];

fn no_args() -> Value {
    json!({ "type": "object", "properties": {} })
}

fn string_args(names: &[(&str, &str)]) -> Value {
    let properties: serde_json::Map<String, Value> = names
        .iter()
        .map(|(name, description)| {
            (
                name.to_string(),
                json!({ "type": "string", "description": description }),
            )
        })
        .collect();
    let required: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
    json!({ "type": "object", "properties": properties, "required": required })
}

pub fn tools() -> Vec<Value> {
    let tool = |name: &str, description: &str, schema: Value| json!({ "name": name, "description": description, "inputSchema": schema });
    vec![
        tool(
            "test_simple_text",
            "Returns a simple text response",
            no_args(),
        ),
        tool("test_image_content", "Returns a 1x1 PNG image", no_args()),
        tool("test_audio_content", "Returns a short WAV clip", no_args()),
        tool(
            "test_embedded_resource",
            "Returns an embedded text resource",
            no_args(),
        ),
        tool(
            "test_multiple_content_types",
            "Returns text, an image and a resource",
            no_args(),
        ),
        tool(
            "test_tool_with_logging",
            "Sends three log notifications while it runs",
            no_args(),
        ),
        tool(
            "test_tool_with_progress",
            "Reports progress 0, 50 and 100 of 100",
            no_args(),
        ),
        tool(
            "test_error_handling",
            "Always fails with isError",
            no_args(),
        ),
        tool(
            "test_sampling",
            "Asks the client's LLM (not possible on this host)",
            string_args(&[("prompt", "The prompt to send to the LLM")]),
        ),
        tool(
            "test_elicitation",
            "Asks the user for input (not possible on this host)",
            string_args(&[("message", "The message to show the user")]),
        ),
        tool(
            "test_elicitation_sep1034_defaults",
            "Elicitation with defaults (not possible on this host)",
            no_args(),
        ),
        tool(
            "test_elicitation_sep1330_enums",
            "Elicitation with enums (not possible on this host)",
            no_args(),
        ),
        json!({
            "name": "json_schema_2020_12_tool",
            "description": "Tool with JSON Schema 2020-12 features",
            "inputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "$anchor": "address",
                        "type": "object",
                        "properties": { "street": { "type": "string" }, "city": { "type": "string" } }
                    }
                },
                "properties": {
                    "name": { "type": "string" },
                    "address": { "$ref": "#/$defs/address" },
                    "contact": { "type": "string" }
                },
                // The wider 2020-12 vocabulary of SEP-2106: composition and
                // conditionals.
                "allOf": [
                    { "anyOf": [{ "required": ["name"] }, { "required": ["contact"] }] }
                ],
                "if": { "required": ["address"] },
                "then": { "properties": { "address": { "required": ["city"] } } },
                "else": { "properties": { "contact": { "minLength": 1 } } },
                "additionalProperties": false
            }
        }),
    ]
}

fn text(text: &str) -> Value {
    json!({ "type": "text", "text": text })
}

fn image() -> Value {
    json!({ "type": "image", "data": PNG_BASE64, "mimeType": "image/png" })
}

/// A 10 ms, 8 kHz, 8-bit mono WAV of silence.
fn wav_base64() -> String {
    let samples = [128u8; 80];
    let mut wav = Vec::with_capacity(44 + samples.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes()); // sample rate
    wav.extend_from_slice(&8000u32.to_le_bytes()); // byte rate
    wav.extend_from_slice(&1u16.to_le_bytes()); // block align
    wav.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    wav.extend_from_slice(&samples);
    BASE64.encode(wav)
}

fn sleep(duration: Duration) {
    wasip2::clocks::monotonic_clock::subscribe_duration(duration.as_nanos() as u64).block();
}

fn content(items: Vec<Value>) -> Reply {
    Reply::Result(json!({ "content": items }))
}

pub fn call_tool(params: &Value) -> Reply {
    let name = params["name"].as_str().unwrap_or_default().to_string();
    let started = Instant::now();
    println!("[INFO] Tool called: {name}");
    let reply = match name.as_str() {
        "test_simple_text" => content(vec![text("This is a simple text response for testing.")]),
        "test_image_content" => content(vec![image()]),
        "test_audio_content" => content(vec![
            json!({ "type": "audio", "data": wav_base64(), "mimeType": "audio/wav" }),
        ]),
        "test_embedded_resource" => content(vec![json!({
            "type": "resource",
            "resource": { "uri": "test://embedded-resource", "mimeType": "text/plain", "text": "This is an embedded resource content." }
        })]),
        "test_multiple_content_types" => content(vec![
            text("Multiple content types test:"),
            image(),
            json!({
                "type": "resource",
                "resource": { "uri": "test://mixed-content-resource", "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}" }
            }),
        ]),
        "test_tool_with_logging" => Reply::Stream(Box::new(|events: &mut EventStream| {
            for (i, message) in [
                "Tool execution started",
                "Tool processing data",
                "Tool execution completed",
            ]
            .iter()
            .enumerate()
            {
                if i > 0 {
                    sleep(Duration::from_millis(50));
                }
                println!("[INFO] {message}");
                events.notify(
                    "notifications/message",
                    json!({ "level": "info", "logger": "mcp-everything", "data": message }),
                );
            }
            json!({ "content": [text("Tool with logging executed successfully")] })
        })),
        "test_tool_with_progress" => {
            let token = params["_meta"]["progressToken"].clone();
            Reply::Stream(Box::new(move |events: &mut EventStream| {
                for (i, progress) in [0, 50, 100].into_iter().enumerate() {
                    if i > 0 {
                        sleep(Duration::from_millis(50));
                    }
                    println!("[DEBUG] Progress {progress}/100");
                    if !token.is_null() {
                        events.notify(
                            "notifications/progress",
                            json!({ "progressToken": token, "progress": progress, "total": 100 }),
                        );
                    }
                }
                json!({ "content": [text("Tool with progress executed successfully")] })
            }))
        }
        "test_error_handling" => {
            eprintln!(
                "[ERROR] Tool test_error_handling failed: this tool intentionally returns an error"
            );
            Reply::Result(json!({
                "isError": true,
                "content": [text("This tool intentionally returns an error for testing")]
            }))
        }
        "json_schema_2020_12_tool" => {
            content(vec![text(&format!("Received: {}", params["arguments"]))])
        }
        name if NEEDS_CLIENT_ROUND_TRIP.contains(&name) => {
            println!(
                "[WARN] {name} needs the client to answer a server request; a fresh instance per request cannot wait for that answer"
            );
            Reply::Result(json!({
                "isError": true,
                "content": [text("This host runs a fresh instance per request, so a tool cannot wait for the client's answer to a server request (sampling, elicitation).")]
            }))
        }
        other => Reply::Error(-32602, format!("Unknown tool: {other}")),
    };
    println!(
        "[INFO] Tool {name} completed in {}ms",
        started.elapsed().as_millis()
    );
    reply
}

pub fn resources() -> Vec<Value> {
    vec![
        json!({ "uri": "test://static-text", "name": "Static text", "description": "A static text resource", "mimeType": "text/plain" }),
        json!({ "uri": "test://static-binary", "name": "Static binary", "description": "A 1x1 PNG", "mimeType": "image/png" }),
        json!({ "uri": "test://watched-resource", "name": "Watched resource", "description": "A resource clients may subscribe to", "mimeType": "text/plain" }),
    ]
}

pub fn resource_templates() -> Vec<Value> {
    vec![json!({
        "uriTemplate": "test://template/{id}/data",
        "name": "Template data",
        "description": "Data for an id",
        "mimeType": "application/json"
    })]
}

pub fn read_resource(params: &Value) -> Reply {
    let uri = params["uri"].as_str().unwrap_or_default();
    println!("[INFO] Reading resource {uri}");
    let contents = match uri {
        "test://static-text" => {
            json!({ "uri": uri, "mimeType": "text/plain", "text": "This is the content of the static text resource." })
        }
        "test://static-binary" => {
            json!({ "uri": uri, "mimeType": "image/png", "blob": PNG_BASE64 })
        }
        "test://watched-resource" => {
            json!({ "uri": uri, "mimeType": "text/plain", "text": "Watched resource content." })
        }
        _ => match uri
            .strip_prefix("test://template/")
            .and_then(|rest| rest.strip_suffix("/data"))
        {
            Some(id) if !id.is_empty() && !id.contains('/') => {
                let data =
                    json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") });
                json!({ "uri": uri, "mimeType": "application/json", "text": data.to_string() })
            }
            _ => {
                println!("[WARN] Resource not found: {uri}");
                return Reply::Error(-32002, format!("Resource not found: {uri}"));
            }
        },
    };
    Reply::Result(json!({ "contents": [contents] }))
}

pub fn prompts() -> Vec<Value> {
    let argument = |name: &str, description: &str| json!({ "name": name, "description": description, "required": true });
    vec![
        json!({ "name": "test_simple_prompt", "description": "A simple prompt without arguments" }),
        json!({
            "name": "test_prompt_with_arguments",
            "description": "A prompt with two required arguments",
            "arguments": [argument("arg1", "First test argument"), argument("arg2", "Second test argument")]
        }),
        json!({
            "name": "test_prompt_with_embedded_resource",
            "description": "A prompt that embeds a resource",
            "arguments": [argument("resourceUri", "URI of the resource to embed")]
        }),
        json!({ "name": "test_prompt_with_image", "description": "A prompt with an image" }),
    ]
}

fn user(content: Value) -> Value {
    json!({ "role": "user", "content": content })
}

pub fn get_prompt(params: &Value) -> Reply {
    let name = params["name"].as_str().unwrap_or_default();
    let arg = |key: &str| {
        params["arguments"][key]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    println!("[INFO] Prompt requested: {name}");
    let messages = match name {
        "test_simple_prompt" => vec![user(text("This is a simple prompt for testing."))],
        "test_prompt_with_arguments" => vec![user(text(&format!(
            "Prompt with arguments: arg1='{}', arg2='{}'",
            arg("arg1"),
            arg("arg2")
        )))],
        "test_prompt_with_embedded_resource" => vec![
            user(json!({
                "type": "resource",
                "resource": { "uri": arg("resourceUri"), "mimeType": "text/plain", "text": "Embedded resource content for testing." }
            })),
            user(text("Please process the embedded resource above.")),
        ],
        "test_prompt_with_image" => {
            vec![user(image()), user(text("Please analyze the image above."))]
        }
        other => return Reply::Error(-32602, format!("Unknown prompt: {other}")),
    };
    Reply::Result(json!({ "messages": messages }))
}

pub fn complete(params: &Value) -> Value {
    const WORDS: [&str; 6] = ["paris", "park", "party", "hello", "help", "world"];
    let prefix = params["argument"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    let values: Vec<&str> = WORDS
        .iter()
        .copied()
        .filter(|w| w.starts_with(&prefix))
        .collect();
    println!("[DEBUG] Completing {prefix:?}: {} values", values.len());
    json!({ "completion": { "values": values, "total": values.len(), "hasMore": false } })
}
