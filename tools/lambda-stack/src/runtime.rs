//! A Lambda Runtime API emulator: each function's binary runs as real processes ("execution
//! environments") that poll `GET /2018-06-01/runtime/invocation/next` and answer with
//! `POST .../{id}/response` or `.../{id}/error`, exactly as under Lambda; the function side is the
//! official `lambda_runtime` client, unchanged.
//!
//! As Lambda does: one invocation at a time per environment; a new environment (a cold start) when
//! an invocation finds none idle, up to a per-function maximum; the process environment is the
//! function's variables plus Lambda's reserved ones (nothing of the caller's leaks in but `PATH`
//! and the AWS endpoint/credentials); an invocation that outlives the function's `Timeout` gets
//! `Sandbox.Timedout` and its environment is killed; a response over 6 MB is refused
//! (`Function.ResponseSizeTooLarge`); a crash or an init error fails the invocation. stdout and
//! stderr are the function's "CloudWatch" log, kept per function.
//!
//! Each environment gets its own base path (`AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:PORT/<function>/<n>`),
//! so the emulator knows which process holds which invocation. The Lambda Invoke API
//! (`POST /2015-03-31/functions/<name>/invocations`) is served on the same port for tools.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

use crate::Error;

/// Lambda's synchronous response payload limit.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// Lambda's synchronous request payload limit.
pub const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;
/// How long an environment may take from process start to its first `next` (Lambda's init
/// phase is capped at 10 s).
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of log kept per function.
const LOG_LINES: usize = 20_000;

/// One function as the emulator runs it.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub name: String,
    pub binary: PathBuf,
    /// The function's variables (template) and the reserved/AWS ones the caller adds.
    pub environment: BTreeMap<String, String>,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// Most environments at once (Lambda's per-function concurrency).
    pub max_instances: usize,
}

/// Why an invocation produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeError {
    /// The function reported an error (`errorType`, the body it posted).
    Function { error_type: String, body: String },
    /// It ran past its timeout (`Sandbox.Timedout`).
    Timeout,
    /// The response was over 6 MB.
    ResponseTooLarge(usize),
    /// The request was over 6 MB.
    RequestTooLarge(usize),
    /// The environment did not start, or died (`Runtime.ExitError`, `Runtime.InitError`).
    Runtime(String),
    /// No such function.
    Unknown(String),
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Function { error_type, body } => write!(f, "{error_type}: {body}"),
            Self::Timeout => write!(f, "Sandbox.Timedout: task timed out"),
            Self::ResponseTooLarge(n) => write!(
                f,
                "Function.ResponseSizeTooLarge: response payload of {n} bytes exceeds {MAX_RESPONSE_BYTES}"
            ),
            Self::RequestTooLarge(n) => write!(f, "RequestTooLarge: {n} bytes"),
            Self::Runtime(e) => write!(f, "{e}"),
            Self::Unknown(n) => write!(f, "ResourceNotFoundException: function {n}"),
        }
    }
}

type Outcome = Result<Bytes, InvokeError>;

#[derive(Debug)]
struct Pending {
    id: String,
    payload: Bytes,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Debug)]
struct Running {
    instance: u64,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Debug, Default)]
struct PoolState {
    queue: VecDeque<Pending>,
    /// Environments blocked in `next`, with the channel that hands them an invocation.
    idle: VecDeque<(u64, oneshot::Sender<(String, Bytes)>)>,
    running: HashMap<String, Running>,
    /// Live environments: id → (pid, whether it has called `next` yet).
    instances: HashMap<u64, (Option<u32>, bool)>,
    next_instance: u64,
}

/// Counters of one function (for tests and benchmarks).
#[derive(Debug, Default)]
pub struct FunctionStats {
    pub cold_starts: AtomicU64,
    pub invocations: AtomicU64,
}

#[derive(Debug)]
struct Pool {
    spec: FunctionSpec,
    state: Mutex<PoolState>,
    logs: Mutex<VecDeque<String>>,
    stats: FunctionStats,
    scratch: PathBuf,
    base_url: String,
    echo_logs: bool,
}

/// The emulator: every function, one Runtime API listener.
#[derive(Debug, Clone)]
pub struct LambdaRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pools: HashMap<String, Arc<Pool>>,
    addr: SocketAddr,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
}

impl LambdaRuntime {
    /// Listens on `127.0.0.1:0` and prepares `functions`; environments start on demand.
    /// `scratch` holds each environment's `/tmp`; `echo_logs` copies function logs to stderr.
    pub async fn start(
        functions: Vec<FunctionSpec>,
        scratch: PathBuf,
        echo_logs: bool,
    ) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut pools = HashMap::new();
        for spec in functions {
            if !spec.binary.is_file() {
                return Err(Error::Setup(format!(
                    "function {}: binary {} does not exist (build it: scripts/build-functions)",
                    spec.name,
                    spec.binary.display()
                )));
            }
            let base_url = format!("http://{addr}/{}", spec.name);
            pools.insert(
                spec.name.clone(),
                Arc::new(Pool {
                    spec,
                    state: Mutex::default(),
                    logs: Mutex::default(),
                    stats: FunctionStats::default(),
                    scratch: scratch.clone(),
                    base_url,
                    echo_logs,
                }),
            );
        }
        let (stop, stopped) = oneshot::channel();
        let inner = Arc::new(Inner {
            pools,
            addr,
            shutdown: Mutex::new(Some(stop)),
        });
        let app = Router::new()
            .route(
                "/{function}/{instance}/2018-06-01/runtime/invocation/next",
                get(next),
            )
            .route(
                "/{function}/{instance}/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route(
                "/{function}/{instance}/2018-06-01/runtime/invocation/{id}/error",
                post(error),
            )
            .route(
                "/{function}/{instance}/2018-06-01/runtime/init/error",
                post(init_error),
            )
            .route("/2015-03-31/functions/{function}/invocations", post(invoke_api))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_RESPONSE_BYTES * 2))
            .with_state(Arc::clone(&inner));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { inner })
    }

    /// The Runtime API's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Invokes `function` synchronously (`RequestResponse`) with `payload`.
    pub async fn invoke(&self, function: &str, payload: Bytes) -> Outcome {
        let pool = self
            .inner
            .pools
            .get(function)
            .ok_or_else(|| InvokeError::Unknown(function.to_owned()))?;
        invoke(pool, payload).await
    }

    /// The function's log lines so far (stdout and stderr of every environment).
    pub fn logs(&self, function: &str) -> Vec<String> {
        self.inner
            .pools
            .get(function)
            .map(|p| p.logs.lock().expect("logs").iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn stats(&self, function: &str) -> Option<&FunctionStats> {
        self.inner.pools.get(function).map(|p| &p.stats)
    }

    /// Kills every environment (they would be frozen and reaped by Lambda).
    pub fn stop(&self) {
        for pool in self.inner.pools.values() {
            let mut state = pool.state.lock().expect("pool");
            state
                .instances
                .values()
                .filter_map(|(pid, _)| *pid)
                .for_each(kill);
            state.instances.clear();
            state.idle.clear();
        }
        if let Some(stop) = self.inner.shutdown.lock().expect("shutdown").take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for pool in self.pools.values() {
            if let Ok(state) = pool.state.lock() {
                state
                    .instances
                    .values()
                    .filter_map(|(pid, _)| *pid)
                    .for_each(kill);
            }
        }
    }
}

fn kill(pid: u32) {
    // SIGKILL, as Lambda does to an environment it resets; no unsafe code: kill(1).
    let _ = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status();
}

async fn invoke(pool: &Arc<Pool>, payload: Bytes) -> Outcome {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(InvokeError::RequestTooLarge(payload.len()));
    }
    pool.stats.invocations.fetch_add(1, Ordering::Relaxed);
    let id = uuid::Uuid::new_v4().to_string();
    let (reply, outcome) = oneshot::channel();
    let mut pending = Pending {
        id: id.clone(),
        payload,
        reply,
    };
    let spawn = {
        let mut state = pool.state.lock().expect("pool");
        loop {
            match state.idle.pop_front() {
                Some((instance, handoff)) => {
                    let Pending { id, payload, reply } = pending;
                    state.running.insert(id.clone(), Running { instance, reply });
                    match handoff.send((id.clone(), payload)) {
                        Ok(()) => break false,
                        // The waiter has gone (its connection dropped): try the next one.
                        Err((id, payload)) => {
                            let running = state.running.remove(&id).expect("just inserted");
                            pending = Pending {
                                id,
                                payload,
                                reply: running.reply,
                            };
                        }
                    }
                }
                None => {
                    state.queue.push_back(pending);
                    let starting = state.instances.values().filter(|(_, ready)| !ready).count();
                    break state.queue.len() > starting && state.instances.len() < pool.spec.max_instances;
                }
            }
        }
    };
    if spawn {
        if let Err(e) = spawn_instance(pool) {
            fail_queued(pool, &e);
        }
    }
    // The function's timeout runs from dispatch ([`invocation`] arms it); this outer limit only
    // ends an invocation that never got an environment (none started within the init allowance).
    let limit = pool.spec.timeout + INIT_TIMEOUT;
    match tokio::time::timeout(limit, outcome).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(InvokeError::Runtime(
            "Runtime.ExitError: the environment went away".into(),
        )),
        Err(_) => {
            let mut state = pool.state.lock().expect("pool");
            state.queue.retain(|p| p.id != id);
            if let Some(running) = state.running.remove(&id) {
                // Lambda resets the environment of a timed-out invocation.
                if let Some((Some(pid), _)) = state.instances.remove(&running.instance) {
                    kill(pid);
                }
            }
            pool_log(pool, format!("REPORT RequestId: {id} Status: timeout"));
            Err(InvokeError::Timeout)
        }
    }
}

/// Ends a dispatched invocation still running at its deadline: `Sandbox.Timedout`, and its
/// environment killed (Lambda resets it). A no-op once the invocation finished.
fn time_out(pool: &Pool, id: &str) {
    let mut state = pool.state.lock().expect("pool");
    let Some(running) = state.running.remove(id) else {
        return;
    };
    if let Some((Some(pid), _)) = state.instances.remove(&running.instance) {
        kill(pid);
    }
    drop(state);
    pool_log(pool, format!("REPORT RequestId: {id} Status: timeout"));
    let _ = running.reply.send(Err(InvokeError::Timeout));
}

fn fail_queued(pool: &Arc<Pool>, why: &str) {
    let mut state = pool.state.lock().expect("pool");
    if state.instances.is_empty() {
        for p in state.queue.drain(..) {
            let _ = p
                .reply
                .send(Err(InvokeError::Runtime(format!("Runtime.InitError: {why}"))));
        }
    }
}

fn pool_log(pool: &Pool, line: String) {
    if pool.echo_logs {
        eprintln!("[{}] {line}", pool.spec.name);
    }
    let mut logs = pool.logs.lock().expect("logs");
    if logs.len() >= LOG_LINES {
        logs.pop_front();
    }
    logs.push_back(line);
}

fn spawn_instance(pool: &Arc<Pool>) -> Result<(), String> {
    let instance = {
        let mut state = pool.state.lock().expect("pool");
        state.next_instance += 1;
        let n = state.next_instance;
        state.instances.insert(n, (None, false));
        n
    };
    let tmp = pool.scratch.join(format!("{}-{instance}", pool.spec.name));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut command = tokio::process::Command::new(&pool.spec.binary);
    command
        .env_clear()
        .envs(&pool.spec.environment)
        .env("AWS_LAMBDA_RUNTIME_API", format!("{}/{instance}", pool.base_url))
        .env("AWS_LAMBDA_FUNCTION_NAME", &pool.spec.name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", pool.spec.memory_mb.to_string())
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", pool.spec.name),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("local/{instance}"))
        .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
        .env("_HANDLER", "bootstrap")
        .env(
            "LAMBDA_TASK_ROOT",
            pool.spec.binary.parent().unwrap_or(std::path::Path::new("/")),
        )
        .env("TZ", ":UTC")
        .env("TMPDIR", &tmp)
        .env("HOME", &tmp)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("{}: {e}", pool.spec.binary.display()))?;
    pool.stats.cold_starts.fetch_add(1, Ordering::Relaxed);
    {
        let mut state = pool.state.lock().expect("pool");
        if let Some(entry) = state.instances.get_mut(&instance) {
            entry.0 = child.id();
        }
    }
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let pool = Arc::clone(pool);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                pool_log(&pool, line);
            }
        });
    }
    let pool = Arc::clone(pool);
    tokio::spawn(async move {
        let status = tokio::select! {
            status = child.wait() => status.ok(),
            () = init_watch(&pool, instance, started) => {
                let _ = child.start_kill();
                child.wait().await.ok()
            }
        };
        let mut state = pool.state.lock().expect("pool");
        let was_ready = state.instances.remove(&instance).is_some_and(|(_, ready)| ready);
        state.idle.retain(|(i, _)| *i != instance);
        let orphans: Vec<String> = state
            .running
            .iter()
            .filter(|(_, r)| r.instance == instance)
            .map(|(id, _)| id.clone())
            .collect();
        for id in orphans {
            if let Some(r) = state.running.remove(&id) {
                let _ = r.reply.send(Err(InvokeError::Runtime(format!(
                    "Runtime.ExitError: the environment exited ({status:?}) during the invocation"
                ))));
            }
        }
        if !was_ready && state.instances.is_empty() {
            for p in state.queue.drain(..) {
                let _ = p.reply.send(Err(InvokeError::Runtime(format!(
                    "Runtime.InitError: the environment exited ({status:?}) before asking for work"
                ))));
            }
        }
        drop(state);
        let _ = std::fs::remove_dir_all(&tmp);
    });
    Ok(())
}

/// Resolves when `instance` has not called `next` within [`INIT_TIMEOUT`].
async fn init_watch(pool: &Pool, instance: u64, started: Instant) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ready = pool
            .state
            .lock()
            .expect("pool")
            .instances
            .get(&instance)
            .is_some_and(|(_, ready)| *ready);
        if ready {
            std::future::pending::<()>().await;
        }
        if started.elapsed() > INIT_TIMEOUT {
            pool_log(pool, format!("INIT_REPORT instance {instance}: init timed out"));
            return;
        }
    }
}

fn pool_of(inner: &Inner, function: &str) -> Result<Arc<Pool>, Box<Response>> {
    inner
        .pools
        .get(function)
        .cloned()
        .ok_or_else(|| Box::new((StatusCode::NOT_FOUND, "unknown function").into_response()))
}

async fn next(State(inner): State<Arc<Inner>>, Path((function, instance)): Path<(String, u64)>) -> Response {
    let pool = match pool_of(&inner, &function) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let waiting = {
        let mut state = pool.state.lock().expect("pool");
        let Some(entry) = state.instances.get_mut(&instance) else {
            return (StatusCode::FORBIDDEN, "unknown environment").into_response();
        };
        if !entry.1 {
            entry.1 = true;
            // First `next`: the init phase is over.
        }
        match state.queue.pop_front() {
            Some(p) => {
                state.running.insert(
                    p.id.clone(),
                    Running {
                        instance,
                        reply: p.reply,
                    },
                );
                return invocation(&pool, &p.id, p.payload);
            }
            None => {
                let (tx, rx) = oneshot::channel();
                state.idle.push_back((instance, tx));
                rx
            }
        }
    };
    match waiting.await {
        Ok((id, payload)) => invocation(&pool, &id, payload),
        Err(_) => (StatusCode::GONE, "environment stopped").into_response(),
    }
}

/// Hands an invocation to an environment, and arms its timeout: Lambda counts `Timeout` from
/// here (the dispatch), not from the call, which may have waited for an environment to start.
fn invocation(pool: &Arc<Pool>, id: &str, payload: Bytes) -> Response {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let deadline = now + pool.spec.timeout;
    let watched = (Arc::clone(pool), id.to_owned());
    tokio::spawn(async move {
        let (pool, id) = watched;
        tokio::time::sleep(pool.spec.timeout).await;
        time_out(&pool, &id);
    });
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("lambda-runtime-aws-request-id", id.to_owned());
    set("lambda-runtime-deadline-ms", deadline.as_millis().to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        format!(
            "arn:aws:lambda:us-east-1:000000000000:function:{}",
            pool.spec.name
        ),
    );
    set(
        "lambda-runtime-trace-id",
        format!(
            "Root=1-{:08x}-{};Sampled=0",
            now.as_secs(),
            &id.replace('-', "")[..24]
        ),
    );
    set("content-type", "application/json".to_owned());
    pool_log(pool, format!("START RequestId: {id} Version: $LATEST"));
    (StatusCode::OK, headers, payload).into_response()
}

fn finish(inner: &Inner, function: &str, id: &str, outcome: Outcome) -> Response {
    let pool = match pool_of(inner, function) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let running = pool.state.lock().expect("pool").running.remove(id);
    let status = match &outcome {
        Ok(_) => "success".to_owned(),
        Err(e) => e.to_string(),
    };
    pool_log(&pool, format!("END RequestId: {id} Status: {status}"));
    match running {
        Some(r) => {
            let _ = r.reply.send(outcome);
            (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
        }
        // Too late (timed out) or never issued.
        None => (StatusCode::BAD_REQUEST, r#"{"errorType":"InvalidRequestID"}"#).into_response(),
    }
}

async fn response(
    State(inner): State<Arc<Inner>>,
    Path((function, _instance, id)): Path<(String, u64, String)>,
    body: Bytes,
) -> Response {
    let outcome = if body.len() > MAX_RESPONSE_BYTES {
        Err(InvokeError::ResponseTooLarge(body.len()))
    } else {
        Ok(body)
    };
    finish(&inner, &function, &id, outcome)
}

async fn error(
    State(inner): State<Arc<Inner>>,
    Path((function, _instance, id)): Path<(String, u64, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Unhandled")
        .to_owned();
    let body = String::from_utf8_lossy(&body).into_owned();
    finish(
        &inner,
        &function,
        &id,
        Err(InvokeError::Function { error_type, body }),
    )
}

async fn init_error(
    State(inner): State<Arc<Inner>>,
    Path((function, instance)): Path<(String, u64)>,
    body: Bytes,
) -> Response {
    if let Ok(pool) = pool_of(&inner, &function) {
        pool_log(
            &pool,
            format!(
                "INIT_REPORT instance {instance}: {}",
                String::from_utf8_lossy(&body)
            ),
        );
        let pid = pool
            .state
            .lock()
            .expect("pool")
            .instances
            .get(&instance)
            .and_then(|(pid, _)| *pid);
        if let Some(pid) = pid {
            kill(pid);
        }
    }
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
}

/// The Lambda Invoke API (`RequestResponse` only), for tools such as `aws lambda invoke`.
async fn invoke_api(State(inner): State<Arc<Inner>>, Path(function): Path<String>, body: Bytes) -> Response {
    let pool = match pool_of(&inner, &function) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match invoke(&pool, body).await {
        Ok(payload) => (StatusCode::OK, payload).into_response(),
        Err(e) => {
            let body =
                serde_json::json!({ "errorType": "Unhandled", "errorMessage": e.to_string() }).to_string();
            (StatusCode::OK, [("x-amz-function-error", "Unhandled")], body).into_response()
        }
    }
}
