//! The OpenAPI document (`server/assets/openapi.json`, served at `GET /openapi.json`)
//! against the API it describes.
//!
//! - Without a stack: the document is JSON and OpenAPI 3, every `$ref` resolves, every
//!   route the router serves is documented (and nothing else is), every error answer is
//!   the documented JSON error, and the limits and character rules it states are exactly
//!   those of `wiber_model`'s validators (checked over every Unicode scalar value).
//! - With a real stack (Kafka, FerretDB, api, consumer): Schemathesis, a property-based
//!   fuzzer driven by the document, runs every check it has against every operation:
//!   undocumented status codes, response bodies and headers that break their schema,
//!   wrong content types, any 5xx, schema-valid requests rejected and schema-invalid
//!   ones accepted. A bounded number of cases per operation and a fixed seed keep a run
//!   reproducible and around half a minute; any failure fails the test, with
//!   Schemathesis's report (a curl reproducer per failure) printed.
//!
//! Schemathesis comes from PyPI into a venv under `.wiber/cache/` (git-ignored), pinned
//! by `tests/fuzz/requirements.txt`, created once and reused. `tests/fuzz/hooks.py` holds
//! the one rule OpenAPI cannot state (see there).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use wiber_model::{
    validate_message_id, validate_user, MAX_BODY_BYTES, MAX_CONTENT_CHARS, MAX_MESSAGE_ID_CHARS,
    MAX_USER_CHARS,
};

/// The Schemathesis release this test was verified with (also pinned in requirements.txt).
const SCHEMATHESIS_VERSION: &str = "4.32.5";
const REQUIREMENTS: &str = include_str!("fuzz/requirements.txt");
/// Fixed, so a failure seen once is seen again with the same document and server.
const SEED: u64 = 20_250_926;
/// Cases per operation and phase: ~1,600 requests in all, ~25 s on 2 cores.
const MAX_EXAMPLES: u32 = 100;
/// A whole Schemathesis run is killed past this (it normally takes well under a minute).
const FUZZ_BOUND: Duration = Duration::from_secs(5 * 60);
/// Each request: POST answers within the producer's message timeout (5 s by default).
const REQUEST_TIMEOUT_SECS: u32 = 20;
/// Creating the venv and installing the pinned packages (about 20 s with a warm mirror).
const PROVISION_BOUND: Duration = Duration::from_secs(10 * 60);

const METHODS: [&str; 8] = [
    "get", "post", "put", "delete", "patch", "head", "options", "trace",
];

// ---------------------------------------------------------------------------------------
// The document on its own
// ---------------------------------------------------------------------------------------

fn document_path() -> PathBuf {
    repo_root().join("server/assets/openapi.json")
}

fn document() -> Value {
    let path = document_path();
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// Follows `$ref`s (local ones only) until a value that is not a reference.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else {
            return v;
        };
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references are used, got {r:?}"));
        v = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling reference {r:?}"));
    }
    panic!("reference cycle at {v}");
}

/// Every operation: (METHOD, path) -> operation object.
fn operations(doc: &Value) -> BTreeMap<(String, String), &Value> {
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    let mut ops = BTreeMap::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("a path item is an object") {
            if METHODS.contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()), op);
            }
        }
    }
    ops
}

/// What the router serves, read from the server's source: every `.route("path",
/// get(..).post(..))` under `server/src/`. Reading the source (not a running server)
/// keeps this test free of a stack and catches a route added without documentation.
fn served_routes() -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![repo_root().join("server/src")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                files.push(p);
            }
        }
    }
    let mut routes = BTreeSet::new();
    for file in files {
        let code: String = fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for call in code.split(".route(").skip(1) {
            // The call's arguments: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let end = call
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap_or_else(|| panic!("unbalanced .route( in {}", file.display()));
            let args = &call[..end];
            let path = args.split('"').nth(1).unwrap_or_else(|| {
                panic!("a .route( without a path literal in {}", file.display())
            });
            let mut found = false;
            for m in METHODS {
                let pat = format!("{m}(");
                let called = args.match_indices(&pat).any(|(i, _)| {
                    i == 0 || !args[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if called {
                    routes.insert((m.to_uppercase(), path.to_string()));
                    found = true;
                }
            }
            assert!(
                found,
                "cannot tell the methods of route {path:?} in {}: teach served_routes()",
                file.display()
            );
        }
    }
    routes
}

#[test]
fn the_document_is_openapi_3_and_documents_every_route_the_router_serves() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("`openapi` is a string");
    assert!(
        version.starts_with("3.0.") || version.starts_with("3.1."),
        "not OpenAPI 3: {version}"
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    // Every reference resolves, wherever it is.
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(o) => {
                if o.contains_key("$ref") {
                    resolve(doc, v);
                }
                o.values().for_each(|x| walk(doc, x));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(doc, x)),
            _ => {}
        }
    }
    walk(&doc, &doc);

    let ops = operations(&doc);
    let documented: BTreeSet<(String, String)> = ops.keys().cloned().collect();
    let served = served_routes();
    assert!(
        served.len() >= 9,
        "found only {served:?} in server/src: has the router moved out of `.route(..)` calls?"
    );
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes served but not in openapi.json: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "operations in openapi.json that the router does not serve: {stale:?}"
    );

    let error_kinds: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
        ["enum"]
        .as_array()
        .expect("Error.error is an enum")
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let mut ids = BTreeSet::new();
    for ((method, path), op) in &ops {
        let at = format!("{method} {path}");
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no operationId"));
        assert!(ids.insert(id), "{at}: operationId {id} is used twice");
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{at}: no responses"));
        assert!(responses.contains_key("200"), "{at}: no 200 answer");
        for (status, resp) in responses {
            let resp = resolve(&doc, resp);
            let at = format!("{at} {status}");
            assert!(resp["description"].is_string(), "{at}: no description");
            assert!(
                resp["headers"]["X-Request-Id"].is_object(),
                "{at}: every answer carries X-Request-Id"
            );
            let code: u16 = status
                .parse()
                .unwrap_or_else(|_| panic!("{at}: not a status"));
            // Every answer of the router has a body of a stated type.
            let content = resp["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{at}: no content"));
            assert!(!content.is_empty(), "{at}: no media type");
            if code >= 400 && path != "/health/readiness" {
                // Errors are `{error, detail, field?}`, with a documented kind.
                let schema = resolve(&doc, &content["application/json"]["schema"]);
                let schema = match schema.get("allOf") {
                    Some(all) => resolve(&doc, &all[0]),
                    None => schema,
                };
                let kinds = schema["properties"]["error"]["enum"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{at}: not the JSON error shape: {schema}"));
                for k in kinds {
                    assert!(error_kinds.contains(k.as_str().unwrap()), "{at}: kind {k}");
                }
                let required = schema["required"].as_array().unwrap();
                assert!(required.contains(&"error".into()) && required.contains(&"detail".into()));
            }
            if code == 408 || code == 413 || code == 415 {
                assert!(
                    resp["headers"]["Connection"].is_object(),
                    "{at}: the API closes the connection after this answer and says so"
                );
            }
        }
    }
    // What POST /messages can answer, and the header it takes.
    let post = ops[&("POST".to_string(), "/messages".to_string())];
    let statuses: BTreeSet<&str> = post["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["200", "400", "408", "413", "415", "422", "503"])
    );
    let body = post["requestBody"]["description"].as_str().unwrap();
    assert!(
        body.contains(&MAX_BODY_BYTES.to_string()),
        "the body bound ({MAX_BODY_BYTES} bytes) is stated: {body}"
    );
    let params: Vec<&Value> = post["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| resolve(&doc, p))
        .collect();
    assert!(params
        .iter()
        .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"));
}

/// A pattern of the form `^[...]*$` or `^[^...]*$` whose class holds literal characters,
/// `\uXXXX` escapes and ranges of them: the only form the document uses for characters.
struct CharClass {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl CharClass {
    fn parse(pattern: &str) -> CharClass {
        let inner = pattern
            .strip_prefix("^[")
            .and_then(|p| p.strip_suffix("]*$"))
            .unwrap_or_else(|| panic!("pattern {pattern:?} is not ^[...]*$"));
        let (negated, inner) = match inner.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, inner),
        };
        let mut chars = inner.chars().peekable();
        let one = |chars: &mut std::iter::Peekable<std::str::Chars>| -> char {
            match chars.next().unwrap() {
                '\\' => {
                    assert_eq!(chars.next(), Some('u'), "only \\u escapes in {pattern:?}");
                    let hex: String = chars.by_ref().take(4).collect();
                    char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap()
                }
                c => c,
            }
        };
        let mut ranges = Vec::new();
        while chars.peek().is_some() {
            let lo = one(&mut chars);
            let hi = if chars.peek() == Some(&'-') {
                chars.next();
                one(&mut chars)
            } else {
                lo
            };
            ranges.push((lo, hi));
        }
        CharClass { negated, ranges }
    }

    fn allows(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// The characters `rule` accepts are exactly those `pattern` allows, over all of Unicode.
fn assert_same_characters(what: &str, pattern: &Value, rule: impl Fn(char) -> bool) {
    let class = CharClass::parse(
        pattern
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no pattern")),
    );
    let wrong: Vec<String> = (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .filter(|&c| class.allows(c) != rule(c))
        .take(10)
        .map(|c| format!("U+{:04X}", c as u32))
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: the pattern and the API disagree on {wrong:?}"
    );
}

#[test]
fn the_document_states_exactly_the_rules_the_api_enforces() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let user_ok = |c: char| validate_user("u", &format!("a{c}")).is_ok();
    let id_ok = |c: char| validate_message_id("m", &format!("a{c}")).is_ok();

    for name in ["UserName", "OptionalUserName"] {
        let s = &schemas[name];
        assert_eq!(s["type"], "string", "{name}");
        assert_eq!(s["maxLength"], MAX_USER_CHARS, "{name}");
        assert_same_characters(name, &s["pattern"], user_ok);
    }
    assert_eq!(schemas["UserName"]["minLength"], 1);
    // An empty count filter means "none", so it is allowed there only.
    assert!(schemas["OptionalUserName"].get("minLength").is_none());
    assert!(validate_user("u", "").is_err());

    let new = &schemas["NewMessage"]["properties"];
    for field in ["fromUser", "toUser"] {
        assert_eq!(
            new[field]["$ref"], "#/components/schemas/UserName",
            "{field}"
        );
    }
    assert_eq!(new["content"]["minLength"], 1);
    assert_eq!(new["content"]["maxLength"], MAX_CONTENT_CHARS);
    // Any character the store can hold: the pattern and `store_cannot_hold` agree on all
    // of Unicode (U+0000 is the one it cannot).
    assert_same_characters("NewMessage.content", &new["content"]["pattern"], |c| {
        wiber_model::store_cannot_hold(&c.to_string()).is_none()
    });
    for (what, s) in [
        ("MessageId", &schemas["MessageId"]),
        ("NewMessage.messageId", &new["messageId"]),
    ] {
        assert_eq!(s["minLength"], 1, "{what}");
        assert_eq!(s["maxLength"], MAX_MESSAGE_ID_CHARS, "{what}");
        assert_same_characters(what, &s["pattern"], id_ok);
    }
    // A header value is read as visible ASCII, then held to the message id's rules.
    let key = &schemas["IdempotencyKey"];
    assert_eq!(key["minLength"], 1);
    assert_eq!(key["maxLength"], MAX_MESSAGE_ID_CHARS);
    assert_same_characters("IdempotencyKey", &key["pattern"], |c| {
        (c == '\t' || (' '..='~').contains(&c)) && id_ok(c)
    });

    // The read routes' parameters.
    let ops = operations(&doc);
    let param = |method: &str, path: &str, name: &str| -> Value {
        let op = ops[&(method.to_string(), path.to_string())];
        let p = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| resolve(&doc, p))
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} lacks parameter {name}"));
        resolve(&doc, &p["schema"]).clone()
    };
    let conv = "/messages/{user1}/{user2}";
    let user = "/messages/user/{username}";
    for (path, name) in [(conv, "user1"), (conv, "user2"), (user, "username")] {
        assert_eq!(
            param("GET", path, name),
            schemas["UserName"],
            "{path} {name}"
        );
    }
    for name in ["user1", "user2"] {
        assert_eq!(
            param("GET", "/messages/count", name),
            schemas["OptionalUserName"]
        );
    }
    for (path, default) in [(conv, 50), (user, 100)] {
        let limit = param("GET", path, "limit");
        assert_eq!(
            (&limit["minimum"], &limit["maximum"], &limit["default"]),
            (&1.into(), &500.into(), &default.into()),
            "{path} limit"
        );
    }
    for name in ["skip", "offset"] {
        let s = param("GET", conv, name);
        assert_eq!(
            (&s["minimum"], &s["maximum"]),
            (&0.into(), &wiber_model::MAX_SKIP.into()),
            "{name}"
        );
    }
}

#[test]
fn requirements_pin_the_verified_schemathesis() {
    assert!(
        REQUIREMENTS
            .lines()
            .any(|l| l.trim() == format!("schemathesis=={SCHEMATHESIS_VERSION}")),
        "tests/fuzz/requirements.txt must pin schemathesis=={SCHEMATHESIS_VERSION}"
    );
    for line in REQUIREMENTS.lines().map(str::trim) {
        assert!(
            line.is_empty() || line.starts_with('#') || line.contains("=="),
            "unpinned requirement {line:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Schemathesis against a real stack
// ---------------------------------------------------------------------------------------

/// Runs `cmd` with stdout and stderr into `log`, killing it past `bound`. Returns its
/// exit status (`None` when it was killed) and what it printed.
fn run_bounded(cmd: &mut Command, bound: Duration, log: &Path) -> (Option<ExitStatus>, String) {
    let out = fs::File::create(log).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + bound;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (status, fs::read_to_string(log).unwrap_or_default())
}

/// An exclusive `flock` held until dropped, so concurrent test runs provision once.
struct Lock {
    _file: fs::File,
}

impl Lock {
    fn acquire(path: &Path) -> Lock {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            rc,
            0,
            "flock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Lock { _file: f }
    }
}

/// The venv's python with the pinned Schemathesis: `.wiber/cache/schemathesis-<v>/venv`,
/// created on first use (python3 -m venv, pip install -r requirements.txt) and reused
/// while requirements.txt is unchanged.
fn schemathesis_python() -> PathBuf {
    let cache = repo_root().join(".wiber").join("cache");
    let dir = cache.join(format!("schemathesis-{SCHEMATHESIS_VERSION}"));
    let venv = dir.join("venv");
    let python = venv.join("bin").join("python");
    let marker = dir.join(".complete");
    let ready =
        || python.is_file() && fs::read_to_string(&marker).ok().as_deref() == Some(REQUIREMENTS);
    if ready() {
        return python;
    }
    fs::create_dir_all(&dir).unwrap();
    let _lock = Lock::acquire(&cache.join("schemathesis.lock"));
    if ready() {
        return python;
    }
    eprintln!(
        "provisioning Schemathesis {SCHEMATHESIS_VERSION} into {}",
        venv.display()
    );

    const INSTALL: &str = "install Python 3.11 or newer with its venv module \
        (Debian/Ubuntu: `apt-get install python3 python3-venv`)";
    let probe = Command::new("python3")
        .args(["-c", "import sys, venv; print(sys.version_info >= (3, 11))"])
        .output();
    match probe {
        Err(e) => panic!(
            "the OpenAPI fuzz test runs Schemathesis, which needs python3, and python3 \
             cannot be run ({e}): {INSTALL}"
        ),
        Ok(out) if String::from_utf8_lossy(&out.stdout).trim() != "True" => panic!(
            "the OpenAPI fuzz test runs Schemathesis {SCHEMATHESIS_VERSION}, which needs \
             Python >= 3.11 with venv; `python3` does not qualify: {}\n{INSTALL}",
            describe(&out)
        ),
        Ok(_) => {}
    }
    let _ = fs::remove_dir_all(&venv);
    let _ = fs::remove_file(&marker);
    let (status, log) = run_bounded(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        PROVISION_BOUND,
        &dir.join("venv.log"),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "`python3 -m venv {}` failed ({status:?}): {INSTALL}\n{log}",
        venv.display()
    );
    let requirements = dir.join("requirements.txt");
    fs::write(&requirements, REQUIREMENTS).unwrap();
    let (status, log) = run_bounded(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(&requirements),
        PROVISION_BOUND,
        &dir.join("pip.log"),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "pip could not install Schemathesis ({status:?}; is the package index reachable?):\n{log}"
    );
    let out = run_ok(Command::new(&python).args(["-m", "schemathesis.cli", "--version"]));
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.contains(SCHEMATHESIS_VERSION),
        "installed Schemathesis reports {version:?}"
    );
    fs::write(&marker, REQUIREMENTS).unwrap();
    python
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_the_document_does_not_state() {
    let python = tokio::task::spawn_blocking(schemathesis_python)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let file_doc = document();
    let operations = operations(&file_doc).len();

    let stack = start_stack("openapi-fuzz", 1, &[]).await;
    let api = stack.api_url();

    // The server compiles the document in: a stale binary would have Schemathesis test
    // an old document and prove nothing about this one.
    let (s, served) = get(&http(), &format!("{api}/openapi.json")).await;
    assert_eq!(s, 200);
    assert!(
        served == file_doc,
        "{api}/openapi.json differs from server/assets/openapi.json: rebuild the server \
         (`cargo build -p wiber-server`)"
    );

    // The document the API serves, saved and handed over as a file with `--url`: loaded
    // from `{api}/openapi.json` itself, Schemathesis leaves out the operation that serves
    // the schema, and `GET /openapi.json` is documented and must be tested too.
    let schema = stack.dir().join("openapi.json");
    fs::write(&schema, serde_json::to_vec_pretty(&served).unwrap()).unwrap();
    let hooks = repo_root().join("cli/tests/fuzz/hooks.py");
    let log = stack.dir().join("schemathesis.log");
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "schemathesis.cli", "run"])
        .arg(&schema)
        .args(["--url", &api])
        // Every check Schemathesis has: not_a_server_error, status_code_conformance,
        // content_type_conformance, response_headers_conformance,
        // response_schema_conformance, negative_data_rejection, positive_data_acceptance,
        // missing_required_header, unsupported_method, allow_header_conformance, and the
        // stateful/auth ones (which find nothing to do on an API without auth).
        .args(["--checks", "all"])
        // All phases (examples, coverage, fuzzing, stateful), all operations: nothing
        // is excluded. /metrics, /docs and its assets are plain GETs documented with
        // their real (non-JSON) media types, so they are fuzzed like the rest.
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--seed", &SEED.to_string()])
        .args(["--workers", "1"])
        .args(["--request-timeout", &REQUEST_TIMEOUT_SECS.to_string()])
        // No example database: a run depends on the seed only, and writes nothing.
        .args(["--generation-database", "none"])
        // Hypothesis's `too_slow` measures how fast *cases are generated*, which depends
        // on the machine's load (cargo builds alongside), not on the API.
        .args(["--suppress-health-check", "too_slow"])
        // Print reproducers with the real values.
        .args(["--output-sanitize", "false", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_COLOR", "1")
        .current_dir(stack.dir());
    eprintln!("running {cmd:?}");
    let started = Instant::now();
    let (status, output) =
        tokio::task::spawn_blocking(move || run_bounded(&mut cmd, FUZZ_BOUND, &log))
            .await
            .unwrap();
    let took = started.elapsed();
    let _ = stack.down().await;

    println!("{output}");
    println!("schemathesis took {took:.1?}");
    let status = status.unwrap_or_else(|| {
        panic!("Schemathesis did not finish within {FUZZ_BOUND:?} and was killed (output above)")
    });
    assert!(
        status.success(),
        "Schemathesis found a difference between openapi.json and the API ({status}); \
         its report is above, with a curl reproducer per failure"
    );
    assert!(
        output.contains(&format!("Tested: {operations}")),
        "Schemathesis did not test all {operations} operations (output above)"
    );
}
