//! Test harness: real `metrom-controller`, `metrom-agent` and `metrom`
//! processes on 127.0.0.1, each test in its own temporary folder on its own port.
//!
//! Binaries are taken from the cargo target folder this test runs from; build
//! them first (`cargo build --workspace --bins`, which the README's test
//! command does).

pub mod bench;
pub mod ec2;
pub mod gateway;
pub mod proc;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Heartbeat timing the tests run controllers with.
pub const HEARTBEAT: &str = "300ms";
pub const HEARTBEAT_TTL: &str = "1500ms";
/// The TTL as a duration, plus the slack a busy 2-core machine needs.
pub const TTL_WITH_SLACK: Duration = Duration::from_secs(10);

/// Path of a workspace binary next to the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash>  →  target/<profile>/<name>
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// A free UDP port on loopback (bound and released; tests retry on a clash).
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// A free TCP port on loopback (bound and released).
pub fn free_tcp_port() -> u16 {
    let s = TcpListener::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout`
/// with `what` and the last value seen.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A test's controller: its data folder, port and process.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// TCP port of the controller's HTTPS endpoint (the installer's), on 127.0.0.1.
    pub https_port: u16,
    pub identity: PathBuf,
    controller: Option<Child>,
    extra_serve_args: Vec<String>,
    controller_env: Vec<(String, String)>,
    agents: Vec<Agent>,
}

impl Cluster {
    /// Initialises a cluster in a fresh temporary folder and starts its controller.
    pub fn start() -> Cluster {
        Self::start_with(&[])
    }

    /// As [`Cluster::start`], with extra `serve` arguments.
    pub fn start_with(extra: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("metrom-test-")
            .tempdir()
            .expect("tempdir");
        // QEMU runs as its own user and must traverse into agents' data dirs.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod the test folder");
        let port = free_udp_port();
        let data = dir.path().join("controller");
        let out = Command::new(bin("metrom-controller"))
            .args(["init", "--data-dir"])
            .arg(&data)
            .args([
                "--advertise",
                &format!("127.0.0.1:{port}"),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .output()
            .expect("run metrom-controller init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut c = Cluster {
            identity: data.join("admin.identity"),
            dir,
            port,
            https_port: free_tcp_port(),
            controller: None,
            extra_serve_args: extra.iter().map(|s| s.to_string()).collect(),
            controller_env: Vec::new(),
            agents: Vec::new(),
        };
        c.start_controller();
        c
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("controller")
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:PORT` of the controller's HTTPS endpoint.
    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port)
    }

    pub fn controller_log(&self) -> PathBuf {
        self.dir.path().join("controller.log")
    }

    /// Starts (or restarts) the controller process and waits until it answers.
    pub fn start_controller(&mut self) {
        assert!(self.controller.is_none(), "controller already running");
        let log = open_log(&self.controller_log());
        let mut cmd = Command::new(bin("metrom-controller"));
        cmd.arg("serve").arg("--data-dir").arg(self.data_dir());
        if !self
            .extra_serve_args
            .iter()
            .any(|a| a == "--heartbeat-interval")
        {
            cmd.args([
                "--heartbeat-interval",
                HEARTBEAT,
                "--heartbeat-ttl",
                HEARTBEAT_TTL,
            ]);
        }
        if !self.extra_serve_args.iter().any(|a| a == "--https-listen") {
            cmd.args(["--https-listen", &format!("127.0.0.1:{}", self.https_port)]);
        }
        // AWS credentials only as a test gives them: none inherited, no
        // shared files but the test's own, no instance metadata lookups.
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("AWS_CONFIG_FILE", self.dir.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd.envs(self.controller_env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .args(&self.extra_serve_args)
            .env("RUST_LOG", "info,metrom_controller=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn metrom-controller");
        self.controller = Some(child);
        let log = self.controller_log();
        wait_for("the controller to answer", Duration::from_secs(20), || {
            if let Some(status) = self
                .controller
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the controller exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            self.metrom(&["status"]).status.success().then_some(())
        });
    }

    /// Environment variables for the controller process (e.g. AWS
    /// credentials), from its next start on.
    pub fn set_controller_env(&mut self, vars: &[(&str, &str)]) {
        for (k, v) in vars {
            self.controller_env.retain(|(key, _)| key != k);
            self.controller_env.push((k.to_string(), v.to_string()));
        }
    }

    /// Appends lines to the controller's `controller.toml` and restarts it.
    pub fn configure(&mut self, toml: &str) {
        let path = self.data_dir().join("controller.toml");
        let mut text = std::fs::read_to_string(&path).expect("controller.toml");
        text.push_str(toml);
        text.push('\n');
        std::fs::write(&path, text).expect("write controller.toml");
        self.stop_controller();
        self.start_controller();
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop_controller(&mut self) {
        if let Some(mut child) = self.controller.take() {
            proc::terminate(&mut child, Duration::from_secs(15));
        }
    }

    /// SIGKILL: a crash.
    pub fn kill_controller(&mut self) {
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(|c| c.id())
    }

    /// Runs `metrom` with this cluster's admin identity.
    pub fn metrom(&self, args: &[&str]) -> Output {
        self.metrom_as(&self.identity, args)
    }

    /// Runs `metrom` with another identity.
    pub fn metrom_as(&self, identity: &Path, args: &[&str]) -> Output {
        Command::new(bin("metrom"))
            .arg("--identity")
            .arg(identity)
            .args(args)
            .env_remove("METROM_IDENTITY")
            .output()
            .expect("run metrom")
    }

    /// Runs `metrom … -o json`, asserting success, and parses the output.
    pub fn json<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.metrom(&all);
        assert!(
            out.status.success(),
            "metrom {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "metrom {args:?}: bad JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `metrom host list -o json`.
    pub fn hosts(&self) -> Vec<Value> {
        self.json(&["host", "list"])
    }

    /// The state of one host ("Ready", "Unreachable", "Revoked").
    pub fn host_state(&self, id: &str) -> Option<String> {
        self.hosts()
            .into_iter()
            .find(|h| h["id"] == id)
            .and_then(|h| h["state"].as_str().map(str::to_string))
    }

    pub fn wait_host_state(&self, id: &str, state: &str, timeout: Duration) {
        wait_for(&format!("host {id} to be {state}"), timeout, || {
            (self.host_state(id).as_deref() == Some(state)).then_some(())
        });
    }

    /// Creates a join token with `metrom token create` and returns it.
    pub fn token(&self, extra: &[&str]) -> String {
        let mut args = vec!["token", "create"];
        args.extend(extra);
        let out = self.metrom(&args);
        assert!(
            out.status.success(),
            "token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    /// Joins a new agent with `token` and starts it.
    pub fn join_agent(&mut self, name: &str, token: &str) -> usize {
        self.join_agent_with_config(name, token, "")
    }

    /// Joins a new agent, writes `agent_toml` as its agent.toml, and starts it.
    pub fn join_agent_with_config(&mut self, name: &str, token: &str, agent_toml: &str) -> usize {
        let agent = Agent::join(self.dir.path(), name, &self.address(), token);
        if !agent_toml.is_empty() {
            std::fs::write(agent.data_dir.join("agent.toml"), agent_toml)
                .expect("write agent.toml");
        }
        self.agents.push(agent);
        let i = self.agents.len() - 1;
        self.agents[i].start(&[]);
        i
    }

    /// Joins an agent whose kvm, docker and fake runtimes are all the fake one,
    /// waits until it is Ready, and returns its index.
    pub fn fake_host(&mut self, name: &str, delay: &str) -> usize {
        self.fake_host_with(name, delay, "")
    }

    /// As [`Cluster::fake_host`], with more lines for its agent.toml.
    pub fn fake_host_with(&mut self, name: &str, delay: &str, agent_toml: &str) -> usize {
        let token = self.token(&[]);
        let toml = format!("{}{agent_toml}\n", fake_agent_toml(delay));
        let i = self.join_agent_with_config(name, &token, &toml);
        let id = self.agent(i).host_id.clone();
        self.wait_host_state(&id, "Ready", Duration::from_secs(20));
        i
    }

    /// Imports a small raw file as a VM base image called `name`.
    pub fn import_dummy_image(&self, name: &str) {
        let path = self.dir.path().join(format!("{name}.raw"));
        std::fs::write(&path, vec![0u8; 64 * 1024]).expect("write image");
        let out = self.metrom(&[
            "image",
            "import",
            path.to_str().expect("utf8"),
            "--name",
            name,
        ]);
        assert!(
            out.status.success(),
            "image import failed: {}",
            stderr(&out)
        );
    }

    /// `metrom user add NAME --role ROLE [extra…]`: returns the identity file.
    pub fn add_user(&self, name: &str, role: &str, extra: &[&str]) -> PathBuf {
        let out = self.dir.path().join(format!("{name}.identity"));
        let mut args = vec![
            "user",
            "add",
            name,
            "--role",
            role,
            "--out",
            out.to_str().expect("utf8"),
        ];
        args.extend(extra);
        self.ok(&args);
        out
    }

    /// Runs `metrom … -o json` as another identity, asserting success.
    pub fn json_as<T: DeserializeOwned>(&self, identity: &Path, args: &[&str]) -> T {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.metrom_as(identity, &all);
        assert!(
            out.status.success(),
            "metrom {args:?} as {} failed ({}): {}",
            identity.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "metrom {args:?}: bad JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs `metrom` and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.metrom(args);
        assert!(
            out.status.success(),
            "metrom {args:?} failed ({}): {}",
            out.status,
            stderr(&out)
        );
        stdout(&out)
    }

    /// The environment's state as `env show -o json` reports it.
    pub fn env(&self, name: &str) -> Value {
        self.json(&["env", "show", name])
    }

    /// (kind, message) of an environment's events, oldest first.
    pub fn events(&self, env: &str) -> Vec<(String, String)> {
        let v: Vec<Value> = self.json(&["env", "events", env, "--limit", "0"]);
        v.iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap_or_default().to_string(),
                    e["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    pub fn wait_env_state(&self, name: &str, state: &str, timeout: Duration) -> Value {
        wait_for(
            &format!("environment {name} to be {state}"),
            timeout,
            || {
                let v = self.env(name);
                (v["state"] == state).then_some(v)
            },
        )
    }

    pub fn agent(&mut self, i: usize) -> &mut Agent {
        &mut self.agents[i]
    }

    /// The host id of agent `i`.
    pub fn host_id(&self, i: usize) -> String {
        self.agents[i].host_id.clone()
    }

    /// Prints the tail of every log (called when a test fails).
    pub fn dump_logs(&self) {
        let mut logs = vec![self.controller_log()];
        logs.extend(self.agents.iter().map(|a| a.log.clone()));
        // VM consoles (cloud-init prints its progress there).
        for a in &self.agents {
            if let Ok(rd) = std::fs::read_dir(a.data_dir.join("kvm")) {
                logs.extend(
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.path().join("console.log")),
                );
            }
        }
        for log in logs {
            if let Ok(text) = std::fs::read_to_string(&log) {
                let lines: Vec<&str> = text.lines().collect();
                let start = lines.len().saturating_sub(60);
                eprintln!(
                    "----- {} (last {} lines) -----",
                    log.display(),
                    lines.len() - start
                );
                for l in &lines[start..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for a in &mut self.agents {
            a.kill();
        }
        self.kill_controller();
        remove_vms_under(self.dir.path());
    }
}

/// Removes the libvirt domains and pools whose files live under `dir` (what a
/// test's kvm agents made), so a failed test leaves nothing running.
pub fn remove_vms_under(dir: &Path) {
    if Command::new("virsh").arg("--version").output().is_err() {
        return;
    }
    let dir = dir.to_string_lossy().into_owned();
    for name in virsh(&["list", "--all", "--name"])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if virsh(&["dumpxml", name]).contains(&dir) {
            let _ = virsh(&["destroy", name]);
            let _ = virsh(&["undefine", name]);
        }
    }
    for name in virsh(&["pool-list", "--all", "--name"])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if virsh(&["pool-dumpxml", name]).contains(&dir) {
            let _ = virsh(&["pool-destroy", name]);
            let _ = virsh(&["pool-undefine", name]);
        }
    }
}

/// A real `metrom-agent` process with its own data folder.
pub struct Agent {
    pub name: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub host_id: String,
    child: Option<Child>,
}

impl Agent {
    /// Runs `metrom-agent join`, asserting success.
    pub fn join(root: &Path, name: &str, controller: &str, token: &str) -> Agent {
        let data_dir = root.join(format!("agent-{name}"));
        let out = agent_join(&data_dir, controller, token, name);
        assert!(
            out.status.success(),
            "join failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let host_id = text
            .split_whitespace()
            .find(|w| w.starts_with("h-"))
            .expect("join prints the host id")
            .to_string();
        Agent {
            name: name.into(),
            log: root.join(format!("agent-{name}.log")),
            data_dir,
            host_id,
            child: None,
        }
    }

    /// Starts `metrom-agent run`.
    pub fn start(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "agent {} already running", self.name);
        let log = open_log(&self.log);
        let child = Command::new(bin("metrom-agent"))
            .arg("run")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(extra)
            .env("RUST_LOG", "info,metrom_agent=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn metrom-agent");
        self.child = Some(child);
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let code = wait_for(&format!("agent {} to exit", self.name), timeout, || {
            child
                .try_wait()
                .expect("try_wait")
                .map(|s| s.code().unwrap_or(-1))
        });
        self.child = None;
        Some(code)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }
}

/// agent.toml for a host whose runtimes are all served by the fake.
pub fn fake_agent_toml(delay: &str) -> String {
    format!("fake_runtimes = [\"kvm\", \"docker\", \"fake\"]\nfake_delay = \"{delay}\"\n")
}

/// A test VM image built and cached by `tests/setup.sh`.
pub fn test_image(name: &str) -> PathBuf {
    let cache = std::env::var_os("METROM_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/metrom-tests".into());
    let p = cache.join(format!("{name}.qcow2"));
    assert!(
        p.exists(),
        "{} is missing: run tests/setup.sh (it builds the test images)",
        p.display()
    );
    p
}

/// agent.toml for a host with the real kvm runtime (TCG unless `accel` says otherwise).
pub fn kvm_agent_toml(test: &str, accel: &str) -> String {
    format!(
        "acceleration = \"{accel}\"\nkvm_pool = \"metrom-{test}-{}\"\nkvm_stop_timeout = \"20s\"\nprovision_timeout = \"10m\"\nactivity_interval = \"2s\"\n",
        metrom_protocol::ids::random_string(6)
    )
}

/// Runs `virsh -c qemu:///system ARGS` and returns stdout.
pub fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .expect("run virsh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a one-service template `name` (1 vCPU, 256 MiB, 1 GiB, image
/// "tiny") under `root`, with `extra_toml` added to its metrom.toml top
/// (e.g. a `[policies]` table), and returns its folder.
pub fn small_template(root: &Path, name: &str, extra_toml: &str) -> PathBuf {
    let dir = root.join(format!("tpl-{name}"));
    std::fs::create_dir_all(&dir).expect("template dir");
    std::fs::write(
        dir.join("metrom.toml"),
        format!(
            "name = \"{name}\"\nruntime = [\"kvm\", \"docker\"]\nimage = \"tiny\"\n\
             [resources]\nvcpus = 1\nmemory = \"256MiB\"\ndisk = \"1GiB\"\n{extra_toml}\n"
        ),
    )
    .expect("write metrom.toml");
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  web:\n    image: metrom-test/busybox:1\n",
    )
    .expect("write compose.yaml");
    dir
}

/// The folder of a starter template shipped in `templates/`.
pub fn starter_template(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../templates")
        .join(name)
}

/// The fake runtime's instances on an agent (env id → record).
pub fn fake_instances(agent_data_dir: &Path) -> serde_json::Map<String, Value> {
    std::fs::read(agent_data_dir.join("fake-runtime.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// `metrom-agent join` without assertions.
pub fn agent_join(data_dir: &Path, controller: &str, token: &str, hostname: &str) -> Output {
    Command::new(bin("metrom-agent"))
        .arg("join")
        .args([
            "--controller",
            controller,
            "--token",
            token,
            "--hostname",
            hostname,
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run metrom-agent join")
}

fn open_log(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log")
}

/// stderr of a process as a string.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stdout of a process as a string.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The two-service compose file of the docker tests and `metrom-bench
/// docker-up`: `web` (busybox httpd on a named volume, published on
/// `host_port`) waits for `db`, which is healthy two seconds after it starts.
pub fn web_db_compose(image: &str, host_port: u16) -> String {
    format!(
        r#"services:
  web:
    image: {image}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    ports:
      - "{host_port}:8080"
    volumes:
      - site:/www
    depends_on:
      db:
        condition: service_healthy
  db:
    image: {image}
    # Healthy two seconds after it starts.
    command: ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 1000000"]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      timeout: 1s
      retries: 60
volumes:
  site:
"#
    )
}
