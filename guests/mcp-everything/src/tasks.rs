//! The tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663).
//!
//! A task's id is its record: what was called, with what, when, signed like
//! `requestState` (`mrtr::sign`), so any instance on any host answers
//! `tasks/get` for it, and a made-up or altered id is unknown (`-32602`).
//! Its status follows from the clock: `slow_compute` works for its
//! `seconds`, then is completed; `failing_job` completes with a tool error
//! after a second; `protocol_error_job` fails; `confirm_delete` and
//! `multi_input` wait for answers.
//!
//! What a later request says about a task — `tasks/cancel` of a running
//! one, `tasks/update` with answers — is kept in the tenant's key-value
//! store (`memory`), a key per fact, and read back by every `tasks/get`.
//! A tenant granted no store refuses those requests with the reason
//! (`-32603`) rather than acknowledging and forgetting them.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::memory;
use crate::mrtr;
use crate::rpc::Reply;

pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// How long a task can be asked about, and how often to ask.
const TTL_MS: u64 = 3_600_000;
const POLL_MS: u64 = 250;

const INVALID_PARAMS: i64 = -32602;
const MISSING_CAPABILITY: i64 = -32021;

/// The tools of the extension, as `tools/list` shows them.
pub fn tools() -> Vec<Value> {
    let tool = |name: &str, description: &str, support: &str, properties: Value| {
        let mut tool = json!({
            "name": name,
            "description": description,
            "inputSchema": { "type": "object", "properties": properties },
        });
        if support != "forbidden" {
            tool["execution"] = json!({ "taskSupport": support });
        }
        tool
    };
    vec![
        tool(
            "greet",
            "Says hello at once (never a task)",
            "forbidden",
            json!({ "name": { "type": "string" } }),
        ),
        tool(
            "slow_compute",
            "Works for `seconds`, then answers (a task for clients with the tasks extension)",
            "optional",
            json!({ "seconds": { "type": "number" }, "label": { "type": "string" } }),
        ),
        tool(
            "failing_job",
            "A task whose tool fails after a second",
            "required",
            json!({}),
        ),
        tool(
            "protocol_error_job",
            "A task that fails at the protocol level",
            "optional",
            json!({}),
        ),
        tool(
            "confirm_delete",
            "A task that waits for the user's confirmation",
            "optional",
            json!({ "filename": { "type": "string" } }),
        ),
        tool(
            "multi_input",
            "A task that waits for two answers",
            "optional",
            json!({}),
        ),
        tool(
            "test_tool_with_task",
            "Asks the user's name (multi-round), then works on it as a task",
            "required",
            json!({}),
        ),
    ]
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `2026-11-26T13:04:05.123Z` for milliseconds since the epoch.
fn iso8601(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Whether the request's client declared the extension.
pub fn declared(capabilities: &Value) -> bool {
    capabilities["extensions"].get(EXTENSION).is_some()
}

fn missing_extension(what: &str) -> Reply {
    Reply::ErrorWithData(
        MISSING_CAPABILITY,
        format!("{what} needs the client's {EXTENSION} extension"),
        json!({ "requiredCapabilities": { "extensions": { EXTENSION: {} } } }),
    )
}

/// A `tools/call` of one of the extension's tools (`None`: not one).
/// `Err` is a reply that must go out as HTTP 400.
pub fn call(name: &str, params: &Value, capabilities: &Value) -> Option<Result<Reply, Reply>> {
    let arguments = &params["arguments"];
    let with_tasks = declared(capabilities);
    Some(match name {
        "greet" => Ok(text(format!(
            "Hello, {}!",
            arguments["name"].as_str().unwrap_or("world")
        ))),
        "failing_job" if !with_tasks => Err(missing_extension("failing_job")),
        "test_tool_with_task" if !with_tasks => Err(missing_extension("test_tool_with_task")),
        "test_tool_with_task" => Ok(mrtr_then_task(params)),
        "slow_compute" | "failing_job" | "protocol_error_job" | "confirm_delete"
        | "multi_input" => {
            if with_tasks {
                Ok(create(name, arguments.clone(), Value::Null))
            } else {
                Ok(run_now(name, arguments))
            }
        }
        _ => return None,
    })
}

fn text(text: String) -> Reply {
    Reply::Result(json!({ "content": [{ "type": "text", "text": text }] }))
}

/// A task-supporting tool called by a client without the extension: done
/// synchronously, as the extension says.
fn run_now(name: &str, arguments: &Value) -> Reply {
    match name {
        "slow_compute" => {
            let seconds = arguments["seconds"].as_f64().unwrap_or(0.0).clamp(0.0, 5.0);
            std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
            text(format!(
                "computed {}",
                arguments["label"].as_str().unwrap_or("(unlabelled)")
            ))
        }
        "protocol_error_job" => Reply::Error(-32603, "protocol_error_job failed on purpose".into()),
        _ => Reply::Result(json!({
            "content": [{ "type": "text", "text": format!("{name} needs input, which only a task can wait for") }],
            "isError": true,
        })),
    }
}

/// Round 1 asks the user's name (no task yet); round 2, with the answer,
/// becomes a task whose result carries it.
fn mrtr_then_task(params: &Value) -> Reply {
    let answer = params["inputResponses"]
        .as_object()
        .and_then(|answers| answers.values().next());
    match answer {
        None => Reply::Result(json!({
            "resultType": "input_required",
            "inputRequests": {
                "user_name": mrtr::elicit("What is your name?", "name", "string"),
            },
        })),
        Some(answer) => {
            let name = answer["content"]["name"].as_str().unwrap_or("someone");
            create("test_tool_with_task", json!({}), json!({ "name": name }))
        }
    }
}

/// A `CreateTaskResult` for a task whose record is its signed id.
fn create(tool: &str, arguments: Value, gathered: Value) -> Reply {
    let created = now_ms();
    let record =
        json!({ "tool": tool, "arguments": arguments, "created": created, "gathered": gathered });
    let task_id = match mrtr::sign("task", record) {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    println!("[INFO] Task created for {tool}");
    Reply::Result(json!({
        "resultType": "task",
        "taskId": task_id,
        "status": "working",
        "createdAt": iso8601(created),
        "lastUpdatedAt": iso8601(created),
        "ttlMs": TTL_MS,
        "pollIntervalMs": POLL_MS,
    }))
}

/// What later requests said about a task.
struct Said {
    /// When a `tasks/cancel` found it running.
    cancelled: Option<u64>,
    /// Answers to its questions, by key: `{ response, at }`.
    answers: serde_json::Map<String, Value>,
    /// Its questions still without an answer, by key.
    pending: Vec<(&'static str, Value)>,
}

impl Said {
    /// What the store holds about `task_id`, whose questions are `asked`
    /// (without a store: nothing, so every question is pending).
    fn recall(
        bucket: Option<&memory::Bucket>,
        task_id: &str,
        asked: Vec<(&'static str, Value)>,
    ) -> Said {
        let read = |what: &str| bucket.and_then(|bucket| memory::get(bucket, &fact(task_id, what)));
        let cancelled = read("cancelled").and_then(|at| at.as_u64());
        let mut answers = serde_json::Map::new();
        let mut pending = Vec::new();
        for (key, ask) in asked {
            match read(&answer_fact(key)) {
                Some(answer) => {
                    answers.insert(key.to_string(), answer);
                }
                None => pending.push((key, ask)),
            }
        }
        Said {
            cancelled,
            answers,
            pending,
        }
    }

    fn last_answer(&self) -> Option<u64> {
        self.answers.values().filter_map(|a| a["at"].as_u64()).max()
    }

    fn answer(&self, key: &str) -> &Value {
        &self.answers.get(key).unwrap_or(&Value::Null)["response"]
    }
}

/// The store's key for one fact about a task: its id's signature part
/// names it (unique, and short enough for any key limit).
fn fact(task_id: &str, what: &str) -> String {
    let name = task_id.rsplit('.').next().unwrap_or(task_id);
    format!("task/{name}/{what}")
}

/// Which fact the answer to question `key` is.
fn answer_fact(key: &str) -> String {
    format!("answer/{key}")
}

/// The questions a waiting task asks, by key.
fn questions(record: &Value) -> Vec<(&'static str, Value)> {
    match record["tool"].as_str().unwrap_or_default() {
        "confirm_delete" => {
            let file = record["arguments"]["filename"]
                .as_str()
                .unwrap_or("the file");
            let ask = mrtr::elicit(&format!("Delete {file}?"), "confirm", "boolean");
            vec![("confirm", ask)]
        }
        "multi_input" => vec![
            ("first", mrtr::elicit("First answer?", "first", "string")),
            ("second", mrtr::elicit("Second answer?", "second", "string")),
        ],
        _ => Vec::new(),
    }
}

/// A waiting task's result once every question has its answer.
fn answered(record: &Value, said: &Said) -> Value {
    let accepted = |key: &str| said.answer(key)["action"] == "accept";
    let text = match record["tool"].as_str().unwrap_or_default() {
        "confirm_delete" => {
            let file = record["arguments"]["filename"]
                .as_str()
                .unwrap_or("the file");
            let confirmed =
                accepted("confirm") && said.answer("confirm")["content"]["confirm"] != false;
            if confirmed {
                format!("Deleted {file}")
            } else {
                format!("Kept {file}")
            }
        }
        _ => format!(
            "Got both answers: {} and {}",
            said.answer("first")["content"],
            said.answer("second")["content"]
        ),
    };
    json!({ "content": [{ "type": "text", "text": text }] })
}

/// What a task is now: status, and its result, error or input requests.
fn state(record: &Value, said: &Said) -> (&'static str, Option<(&'static str, Value)>, u64) {
    let created = record["created"].as_u64().unwrap_or(0);
    if let Some(at) = said.cancelled {
        return ("cancelled", None, at);
    }
    let arguments = &record["arguments"];
    let after = |ms: u64| now_ms() >= created + ms;
    match record["tool"].as_str().unwrap_or_default() {
        "slow_compute" => {
            let ms = (arguments["seconds"].as_f64().unwrap_or(0.0).max(0.0) * 1000.0) as u64;
            if after(ms) {
                let label = arguments["label"].as_str().unwrap_or("(unlabelled)");
                let result =
                    json!({ "content": [{ "type": "text", "text": format!("computed {label}") }] });
                ("completed", Some(("result", result)), created + ms)
            } else {
                ("working", None, created)
            }
        }
        "failing_job" => {
            if after(1000) {
                let result = json!({
                    "content": [{ "type": "text", "text": "failing_job: the job failed, as it always does" }],
                    "isError": true,
                });
                ("completed", Some(("result", result)), created + 1000)
            } else {
                ("working", None, created)
            }
        }
        "protocol_error_job" => (
            "failed",
            Some((
                "error",
                json!({ "code": -32603, "message": "protocol_error_job: internal failure" }),
            )),
            created,
        ),
        "confirm_delete" | "multi_input" => {
            let updated = said.last_answer().unwrap_or(created);
            if said.pending.is_empty() {
                (
                    "completed",
                    Some(("result", answered(record, said))),
                    updated,
                )
            } else {
                let pending = said
                    .pending
                    .iter()
                    .map(|(key, ask)| (key.to_string(), ask.clone()))
                    .collect();
                let pending = Value::Object(pending);
                ("input_required", Some(("inputRequests", pending)), updated)
            }
        }
        "test_tool_with_task" => {
            let name = record["gathered"]["name"].as_str().unwrap_or("someone");
            let result = json!({ "content": [{ "type": "text", "text": format!("Finished the work for {name}") }] });
            ("completed", Some(("result", result)), created)
        }
        _ => (
            "failed",
            Some((
                "error",
                json!({ "code": -32603, "message": "unknown task" }),
            )),
            created,
        ),
    }
}

/// `tasks/get`, `tasks/update`, `tasks/cancel` (`None`: another method).
/// `Err` goes out as HTTP 400.
pub fn method(method: &str, params: &Value, capabilities: &Value) -> Option<Result<Reply, Reply>> {
    if !matches!(method, "tasks/get" | "tasks/update" | "tasks/cancel") {
        return None;
    }
    if !declared(capabilities) {
        return Some(Err(missing_extension(method)));
    }
    let Some(task_id) = params["taskId"].as_str() else {
        return Some(Ok(Reply::Error(
            INVALID_PARAMS,
            "taskId is required".into(),
        )));
    };
    let record = match mrtr::verify_state("task", task_id) {
        Ok(record) => record,
        Err(_) => {
            return Some(Ok(Reply::Error(
                INVALID_PARAMS,
                format!("unknown taskId {task_id:?}"),
            )));
        }
    };
    let store = memory::open();
    let said = Said::recall(store.as_ref().ok(), task_id, questions(&record));
    let (status, detail, updated) = state(&record, &said);
    let terminal = matches!(status, "completed" | "failed" | "cancelled");
    Some(Ok(match method {
        "tasks/get" => {
            let mut task = json!({
                "taskId": task_id,
                "status": status,
                "createdAt": iso8601(record["created"].as_u64().unwrap_or(0)),
                "lastUpdatedAt": iso8601(updated),
                "ttlMs": TTL_MS,
                "pollIntervalMs": POLL_MS,
            });
            if let Some((key, value)) = detail {
                task[key] = value;
            }
            Reply::Result(task)
        }
        "tasks/cancel" if terminal => Reply::Result(json!({})),
        "tasks/cancel" => {
            let kept = store.and_then(|bucket| {
                memory::put(&bucket, &fact(task_id, "cancelled"), &json!(now_ms()))
            });
            match kept {
                Ok(()) => {
                    println!("[INFO] Task cancelled while {status}");
                    Reply::Result(json!({}))
                }
                Err(why) => cannot("cancel a running task (it runs to its end)", &why),
            }
        }
        // Nothing waits for input: nothing to keep (the ack is all the
        // extension asks for).
        _ if status != "input_required" => Reply::Result(json!({})),
        _ => {
            let pending: Vec<&str> = said.pending.iter().map(|(key, _)| *key).collect();
            let given = params["inputResponses"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            // Answers to questions the task did not ask are ignored.
            let answers: Vec<_> = given
                .into_iter()
                .filter(|(key, _)| pending.contains(&key.as_str()))
                .collect();
            let kept = store.and_then(|bucket| {
                answers.iter().try_for_each(|(key, response)| {
                    let answer = json!({ "response": response, "at": now_ms() });
                    memory::put(&bucket, &fact(task_id, &answer_fact(key)), &answer)
                })
            });
            match kept {
                Ok(()) => {
                    println!(
                        "[INFO] Task got {} of {} answers",
                        answers.len(),
                        pending.len()
                    );
                    Reply::Result(json!({}))
                }
                Err(why) => cannot("keep answers for a waiting task", &why),
            }
        }
    }))
}

/// A request about a task that cannot be honoured: said, not forgotten.
fn cannot(what: &str, why: &str) -> Reply {
    eprintln!("[WARN] Cannot {what}: {why}");
    Reply::Error(-32603, format!("cannot {what}: {why}"))
}
