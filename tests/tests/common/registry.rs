//! Debian's `docker-registry` (distribution) on a loopback port with storage of its own: the
//! upstream registry of tests that need a real one (catalogs from a registry, the Lambda
//! functions of the serverless stack, which read their upstream over HTTP only).

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, read, released: the registry binds it right after).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Debian's `docker-registry` on a loopback port with its own storage, stopped on drop.
#[derive(Debug)]
pub struct Registry {
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let storage = dir.path().join("data");
        std::fs::create_dir_all(&storage).expect("registry storage");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: true}}}}\n\
                 storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
                 http: {{addr: 127.0.0.1:{port}}}\n",
                storage.display()
            ),
        )
        .expect("registry config");
        let log = dir.path().join("registry.log");
        let mut registry = Self {
            port,
            config,
            log,
            child: None,
            _dir: dir,
        };
        registry.resume();
        registry
    }

    /// (Re)starts the process on the same port and storage and waits until `/v2/` answers.
    pub fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("registry log");
        let mut command = Command::new("docker-registry");
        command
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        // docker-registry reads every REGISTRY_* variable as configuration and refuses unknown ones.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("REGISTRY_") {
                command.env_remove(name);
            }
        }
        let child = command
            .spawn()
            .expect("docker-registry is needed by this test (apt-get install docker-registry)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = Command::new("curl")
                .args(["-s", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{}/v2/", self.port))
                .output()
                .expect("curl");
            if String::from_utf8_lossy(&status.stdout) == "200" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer within 30 s: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the process (our child, by its handle); the storage stays for [`Registry::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `127.0.0.1:<port>`, as the generator's push option takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
