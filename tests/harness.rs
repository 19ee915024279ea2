//! Harnesses for the real components the end-to-end tests drive: the `ingest` binary as a
//! child process, the S3-compatible server started by `scripts/s3-server.sh`, the Python
//! virtualenv made by `scripts/pyenv.sh`, and readers of what a store holds.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use schemas::read::{SpanRow, read_span_file};

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Path of a workspace binary built next to the test executable (`make test` builds them
/// first with `cargo build --bins`).
pub fn bin_path(name: &str) -> TestResult<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("test executable has no target directory")?;
    let path = dir.join(name);
    if !path.exists() {
        return Err(format!(
            "{} is missing: build the binaries first (`cargo build --bins`, done by `make test`)",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// What a finished command printed: (exit code, stdout, stderr); the code is -1 when a signal
/// ended it.
pub type Ran = (i32, String, String);

/// Runs `cmd` to completion and collects what it printed.
pub fn output_of(cmd: &mut Command) -> TestResult<Ran> {
    let out = cmd.output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> TestResult<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// The gRPC and HTTP addresses of ingest's `listening` log line, in the text format or the
/// JSON one.
fn listening_addrs(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = log.lines().find(|l| l.contains("listening"))?;
    let field = |name: &str| -> Option<SocketAddr> {
        let rest = &line[line.find(name)? + name.len()..];
        let rest = rest.trim_start_matches(['=', '"', ':']);
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    Some((field("grpc_addr")?, field("http_addr")?))
}

/// A running `ingest` child process. Killed when dropped.
pub struct Ingest {
    child: Option<Child>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
}

/// How to start `ingest`: store URL, WAL dir, extra flags, extra environment.
pub struct IngestOpts {
    pub store: String,
    pub wal_dir: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl IngestOpts {
    pub fn local(dir: &Path) -> Self {
        Self {
            store: dir.join("store").display().to_string(),
            wal_dir: dir.join("wal"),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, flag: &str, value: &str) -> Self {
        self.args.push(flag.into());
        self.args.push(value.into());
        self
    }
}

impl Ingest {
    /// Starts `ingest` on ports the kernel picks and waits until both listeners answer.
    ///
    /// Picking "free" ports here and passing them on races with every other test: a port free a
    /// moment ago can be taken (by another server or by an outgoing connection's ephemeral port)
    /// before ingest binds it. So ingest binds port 0 and the addresses come from its
    /// `listening` log line, which holds the bound addresses in both log formats.
    pub fn start(opts: &IngestOpts) -> TestResult<Self> {
        std::fs::create_dir_all(&opts.wal_dir)?;
        let log = tempfile::Builder::new()
            .prefix("ingest.")
            .suffix(".log")
            .tempfile_in(opts.wal_dir.parent().unwrap_or(&opts.wal_dir))?
            .into_temp_path()
            .keep()?;
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin_path("ingest")?);
        cmd.arg("--store")
            .arg(&opts.store)
            .arg("--wal-dir")
            .arg(&opts.wal_dir)
            .arg("--grpc-addr")
            .arg("127.0.0.1:0")
            .arg("--http-addr")
            .arg("127.0.0.1:0")
            .args(&opts.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((grpc, http)) = listening_addrs(&log_text())
                && std::net::TcpStream::connect(http).is_ok()
                && std::net::TcpStream::connect(grpc).is_ok()
            {
                return Ok(Self {
                    child: Some(child),
                    grpc,
                    http,
                    log,
                });
            }
            let failure = if let Some(status) = child.try_wait()? {
                format!("ingest exited at start ({status})")
            } else if Instant::now() > deadline {
                "ingest did not start in 30 s".to_string()
            } else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{failure}: {}", log_text()).into());
        }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&mut self, sig: &str) -> TestResult<ExitStatus> {
        let child = self.child.as_mut().ok_or("ingest already stopped")?;
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(
                    format!("ingest did not exit after SIG{sig}: {}", self.log_text()).into(),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait: ingest flushes everything and exits.
    pub fn terminate(&mut self) -> TestResult<ExitStatus> {
        self.signal("TERM")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) -> TestResult<ExitStatus> {
        self.signal("KILL")
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A local put interrupted by a kill leaves object_store's staging file `<name>#<n>` behind; it
/// is not data (object_store's listing and every reader skip it), only space until removed.
fn is_staging_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('#'))
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Every row of every span file under `store/spans`, with the file's partition directory
/// (`tenant=…/date=…/hour=…`).
pub fn local_store_rows(store: &Path) -> TestResult<Vec<(String, SpanRow)>> {
    let mut out = Vec::new();
    let root = store.join(schemas::layout::SPANS_DIR);
    if !root.exists() {
        return Ok(out);
    }
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if is_staging_file(&path) {
                continue;
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let partition = path
                    .parent()
                    .and_then(|p| p.strip_prefix(store).ok())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                for row in read_span_file(std::fs::read(&path)?.into())? {
                    out.push((partition.clone(), row));
                }
            } else {
                return Err(format!("unexpected file in store: {}", path.display()).into());
            }
        }
    }
    Ok(out)
}

/// Counts rows by (trace_id, span_id): a store with duplicates has counts above 1.
pub fn id_counts<'a>(
    rows: impl IntoIterator<Item = &'a SpanRow>,
) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for r in rows {
        *counts
            .entry((r.trace_id.clone(), r.span_id.clone()))
            .or_insert(0) += 1;
    }
    counts
}

/// The project's Python virtualenv (created by `scripts/pyenv.sh`, which `make test` runs).
pub fn python() -> TestResult<PathBuf> {
    let root = repo_root();
    let py = root.join(".venv/bin/python");
    if !py.exists() {
        let status = Command::new(root.join("scripts/pyenv.sh"))
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            return Err("scripts/pyenv.sh failed".into());
        }
    }
    Ok(py)
}

/// Runs a Python script from `tests/python` in the virtualenv; returns stdout.
pub fn run_python(script: &str, args: &[&str]) -> TestResult<String> {
    let out = Command::new(python()?)
        .arg(repo_root().join("tests/python").join(script))
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "{script} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A SeaweedFS S3 server on loopback, started by the project's script; stopped on drop.
pub struct S3Server {
    dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub bucket: String,
}

impl S3Server {
    pub fn start() -> TestResult<Self> {
        python()?;
        let dir = tempfile::tempdir()?;
        let script = repo_root().join("scripts/s3-server.sh");
        let out = Command::new(&script)
            .arg("start")
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "s3-server.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let text = std::fs::read_to_string(dir.path().join("env"))?;
        let mut env = Vec::new();
        let mut bucket = String::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                if k == "S3_BUCKET" {
                    bucket = v.to_string();
                } else {
                    env.push((k.to_string(), v.to_string()));
                }
            }
        }
        Ok(Self { dir, env, bucket })
    }

    /// An object_store client for the bucket, configured like ingest is (from these vars).
    pub fn client(&self) -> TestResult<object_store::aws::AmazonS3> {
        let mut b = object_store::aws::AmazonS3Builder::new().with_bucket_name(&self.bucket);
        for (k, v) in &self.env {
            if let Ok(key) = k
                .to_ascii_lowercase()
                .parse::<object_store::aws::AmazonS3ConfigKey>()
            {
                b = b.with_config(key, v);
            }
        }
        Ok(b.build()?)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let script = repo_root().join("scripts/s3-server.sh");
        let _ = Command::new(script)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // /proc counts in USER_HZ, which Linux fixes at 100 for userspace whatever the kernel HZ.
    Some(ticks / 100.0)
}

/// Peak resident set size of a process (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::listening_addrs;

    #[test]
    fn listening_addrs_reads_both_log_formats() {
        let text = "2026-12-07T21:25:32.009642Z  INFO ingest: listening \
            grpc_addr=127.0.0.1:37049 http_addr=127.0.0.1:36271 store=/tmp/s/store";
        let json = r#"{"timestamp":"2026-12-07T21:25:32.989145Z","level":"INFO","fields":{"message":"listening","grpc_addr":"127.0.0.1:34637","http_addr":"127.0.0.1:39359","store":"/tmp/s"},"target":"ingest"}"#;
        for (line, grpc, http) in [
            (text, "127.0.0.1:37049", "127.0.0.1:36271"),
            (json, "127.0.0.1:34637", "127.0.0.1:39359"),
        ] {
            let log = format!("an earlier line\n{line}\na later line\n");
            let (g, h) = listening_addrs(&log).expect(line);
            assert_eq!(
                (g.to_string(), h.to_string()),
                (grpc.to_string(), http.to_string())
            );
        }
        assert_eq!(listening_addrs("starting\n"), None);
    }
}
