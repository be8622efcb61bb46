//! An EC2-compatible server for tests (moto's `moto_server`, installed by
//! tests/setup.sh), a plain client of the EC2 Query API to check what Metrom
//! did independently of the SDK it uses, and a fault-injecting proxy
//! (throttling, 5xx, refused credentials, answers lost after the server acted). Everything on
//! 127.0.0.1; every loop bounded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Cluster, wait_for};

/// The region tests use.
pub const REGION: &str = "us-east-1";
/// A machine image moto knows; accounts map the test image `tiny` to it.
pub const AMI: &str = "ami-12c6146b";
/// The test secret key: it must never show up in any output or log.
pub const SECRET: &str = "metrom-test-secret-Zq8x";

/// Gives the cluster's controller test AWS credentials (from its next start).
pub fn give_credentials(c: &mut Cluster) {
    c.set_controller_env(&[
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ]);
}

/// `metrom cloud add aws NAME` at `endpoint`, mapping `tiny` to [`AMI`].
pub fn add_account(c: &Cluster, name: &str, endpoint: &str, extra: &[&str]) {
    let image_map = format!("tiny={AMI}");
    let mut args = vec![
        "cloud",
        "add",
        "aws",
        name,
        "--region",
        REGION,
        "--endpoint",
        endpoint,
        "--image-map",
        &image_map,
    ];
    args.extend(extra);
    c.ok(&args);
}

/// A template on base image `tiny` with the given runtimes (a TOML array),
/// vCPUs and memory, a compose file with a marker, and a package.
pub fn template(root: &Path, name: &str, runtime: &str, vcpus: u32, memory: &str) -> PathBuf {
    let dir = root.join(format!("tpl-{name}"));
    std::fs::create_dir_all(&dir).expect("template dir");
    std::fs::write(
        dir.join("metrom.toml"),
        format!(
            "name = \"{name}\"\nruntime = {runtime}\nimage = \"tiny\"\npackages = [\"git\"]\n\
             [resources]\nvcpus = {vcpus}\nmemory = \"{memory}\"\ndisk = \"1GiB\"\n"
        ),
    )
    .expect("metrom.toml");
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  web:\n    image: metrom-test/busybox:1\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]  # cloud-marker-7f3\n",
    )
    .expect("compose.yaml");
    dir
}

/// A free TCP port on loopback (bound and released).
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The `moto_server` to run: `$METROM_MOTO_SERVER`, the venv tests/setup.sh
/// makes, or the one on PATH.
pub fn moto_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("METROM_MOTO_SERVER") {
        return p.into();
    }
    let venv = PathBuf::from("/opt/metrom-tests/moto/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    "moto_server".into()
}

/// A `moto_server` process on 127.0.0.1, killed on drop.
pub struct Moto {
    pub port: u16,
    child: Child,
    pub log: PathBuf,
}

impl Moto {
    /// Starts a server on a free port and waits until it answers.
    pub fn start(log_dir: &std::path::Path) -> Moto {
        Self::start_on(free_tcp_port(), log_dir, &[])
    }

    /// Starts one on `port` with extra environment (e.g. moto's
    /// `INITIAL_NO_AUTH_ACTION_COUNT`).
    pub fn start_on(port: u16, log_dir: &std::path::Path, env: &[(&str, &str)]) -> Moto {
        let log = log_dir.join(format!("moto-{port}.log"));
        let file = std::fs::File::create(&log).expect("moto log");
        let child = Command::new(moto_server_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run tests/setup.sh (it installs moto[server])",
                    moto_server_bin().display()
                )
            });
        let mut m = Moto { port, child, log };
        wait_for("moto_server to answer", Duration::from_secs(60), || {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!(
                    "moto_server exited ({status}): {}",
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                );
            }
            let (status, _) = query_raw(m.port, &[("Action", "DescribeRegions")]).ok()?;
            (status == 200).then_some(())
        });
        m
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Calls the EC2 Query API; panics unless it answers 200.
    pub fn query(&self, params: &[(&str, &str)]) -> Xml {
        let (status, body) = query_raw(self.port, params).expect("EC2 query");
        assert_eq!(status, 200, "EC2 {params:?} answered {status}: {body}");
        Xml::parse(&body)
    }

    /// Every instance (DescribeInstances), optionally filtered by a tag.
    pub fn instances(&self, tag: Option<(&str, &str)>) -> Vec<Ec2Instance> {
        let mut params = vec![("Action", "DescribeInstances")];
        let name;
        if let Some((k, v)) = tag {
            name = format!("tag:{k}");
            params.extend([("Filter.1.Name", name.as_str()), ("Filter.1.Value.1", v)]);
        }
        let xml = self.query(&params);
        xml.all("instancesSet")
            .into_iter()
            .flat_map(|set| set.children("item"))
            .map(Ec2Instance::from_xml)
            .collect()
    }

    pub fn instance(&self, id: &str) -> Ec2Instance {
        let xml = self.query(&[("Action", "DescribeInstances"), ("InstanceId.1", id)]);
        xml.all("instancesSet")
            .into_iter()
            .flat_map(|set| set.children("item"))
            .map(Ec2Instance::from_xml)
            .next()
            .unwrap_or_else(|| panic!("no instance {id}"))
    }

    /// RunInstances of one t3.micro outside Metrom, with these tags.
    pub fn run_instance(&self, tags: &[(&str, &str)]) -> String {
        let mut params: Vec<(String, String)> = [
            ("Action", "RunInstances"),
            ("ImageId", AMI),
            ("InstanceType", "t3.micro"),
            ("MinCount", "1"),
            ("MaxCount", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if !tags.is_empty() {
            params.push(("TagSpecification.1.ResourceType".into(), "instance".into()));
            for (i, (k, v)) in tags.iter().enumerate() {
                params.push((
                    format!("TagSpecification.1.Tag.{}.Key", i + 1),
                    k.to_string(),
                ));
                params.push((
                    format!("TagSpecification.1.Tag.{}.Value", i + 1),
                    v.to_string(),
                ));
            }
        }
        let refs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let xml = self.query(&refs);
        xml.first("instanceId")
            .expect("an instance id")
            .text
            .clone()
    }

    pub fn stop_instance(&self, id: &str) {
        self.query(&[("Action", "StopInstances"), ("InstanceId.1", id)]);
    }

    /// The instance's user-data, decoded.
    pub fn user_data(&self, id: &str) -> Vec<u8> {
        use base64::Engine;
        let xml = self.query(&[
            ("Action", "DescribeInstanceAttribute"),
            ("InstanceId", id),
            ("Attribute", "userData"),
        ]);
        let b64 = xml
            .first("userData")
            .and_then(|u| u.first("value"))
            .map(|v| v.text.clone())
            .unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .expect("user-data is base64")
    }
}

impl Drop for Moto {
    /// Kills the server; its log stays only when a test failed.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("moto_server log: {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// An instance as the Query API shows it.
#[derive(Debug, Clone)]
pub struct Ec2Instance {
    pub id: String,
    pub state: String,
    pub instance_type: String,
    pub image: String,
    pub tags: BTreeMap<String, String>,
}

impl Ec2Instance {
    fn from_xml(x: &Xml) -> Ec2Instance {
        let text = |name: &str| x.child(name).map(|n| n.text.clone()).unwrap_or_default();
        Ec2Instance {
            id: text("instanceId"),
            state: x
                .child("instanceState")
                .and_then(|s| s.child("name"))
                .map(|n| n.text.clone())
                .unwrap_or_default(),
            instance_type: text("instanceType"),
            image: text("imageId"),
            tags: x
                .child("tagSet")
                .map(|t| {
                    t.children("item")
                        .into_iter()
                        .map(|i| {
                            let f =
                                |n: &str| i.child(n).map(|v| v.text.clone()).unwrap_or_default();
                            (f("key"), f("value"))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// POSTs one Query API call; (status, body).
pub fn query_raw(port: u16, params: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let mut body = String::from("Version=2016-11-15");
    for (k, v) in params {
        body.push('&');
        body.push_str(&urlencode(k));
        body.push('=');
        body.push_str(&urlencode(v));
    }
    // moto routes by the credential scope of the Authorization header and
    // does not check signatures (unless told to).
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/ec2/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A small XML tree (elements and text; attributes ignored), enough for EC2 answers.
#[derive(Debug, Clone, Default)]
pub struct Xml {
    pub name: String,
    pub text: String,
    pub children: Vec<Xml>,
}

impl Xml {
    pub fn parse(s: &str) -> Xml {
        let mut stack = vec![Xml::default()];
        let mut rest = s;
        // Each step consumes at least one byte.
        while let Some(lt) = rest.find('<') {
            let text = &rest[..lt];
            if !text.trim().is_empty()
                && let Some(top) = stack.last_mut()
            {
                top.text.push_str(&unescape(text.trim()));
            }
            let Some(gt) = rest[lt..].find('>') else {
                break;
            };
            let tag = &rest[lt + 1..lt + gt];
            rest = &rest[lt + gt + 1..];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                if stack.len() > 1 {
                    let node = stack.pop().expect("open element");
                    debug_assert_eq!(node.name, name.trim());
                    stack.last_mut().expect("parent").children.push(node);
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let name = tag
                .trim_end_matches('/')
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let node = Xml {
                name,
                ..Xml::default()
            };
            if self_closing {
                stack.last_mut().expect("parent").children.push(node);
            } else {
                stack.push(node);
            }
        }
        while stack.len() > 1 {
            let node = stack.pop().expect("open element");
            stack.last_mut().expect("parent").children.push(node);
        }
        stack.pop().expect("root")
    }

    pub fn child(&self, name: &str) -> Option<&Xml> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children(&self, name: &str) -> Vec<&Xml> {
        self.children.iter().filter(|c| c.name == name).collect()
    }

    /// Every element called `name`, at any depth, outermost first.
    pub fn all(&self, name: &str) -> Vec<&Xml> {
        let mut out = Vec::new();
        for c in &self.children {
            if c.name == name {
                out.push(c);
            } else {
                out.extend(c.all(name));
            }
        }
        out
    }

    pub fn first(&self, name: &str) -> Option<&Xml> {
        self.all(name).into_iter().next()
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// What the proxy does to a request instead of relaying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 503 `RequestLimitExceeded`.
    Throttle,
    /// HTTP 500 `InternalError`.
    ServerError,
    /// HTTP 401 `AuthFailure`.
    AuthFailure,
    /// Forwarded to the server, which acts on it, but its answer is dropped
    /// and the connection closed: the client cannot know what happened.
    DropAnswer,
}

/// A rule: the next `count` requests whose `Action` is `action` (any when
/// `None`) get `fault`.
#[derive(Debug, Clone)]
struct Rule {
    action: Option<String>,
    fault: Fault,
    count: usize,
}

/// An HTTP proxy in front of an EC2 server that answers some requests with
/// faults and forwards the others.
pub struct FaultProxy {
    pub port: u16,
    rules: Arc<Mutex<Vec<Rule>>>,
    requests: Arc<Mutex<Vec<String>>>,
    faults: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let p = FaultProxy {
            port,
            rules: Default::default(),
            requests: Default::default(),
            faults: Default::default(),
            stop: Default::default(),
        };
        let (rules, requests, faults, stop) = (
            p.rules.clone(),
            p.requests.clone(),
            p.faults.clone(),
            p.stop.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (rules, requests, faults, stop) = (
                    rules.clone(),
                    requests.clone(),
                    faults.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || {
                    serve(conn, upstream, &rules, &requests, &faults, &stop);
                });
            }
        });
        p
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answers the next `count` requests of `action` (any: `None`) with `fault`.
    pub fn fail(&self, action: Option<&str>, fault: Fault, count: usize) {
        self.rules.lock().expect("rules").push(Rule {
            action: action.map(String::from),
            fault,
            count,
        });
    }

    /// The actions of every request seen, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }

    /// How many faults were served.
    pub fn faults(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One client connection: requests in turn (keep-alive) until the client
/// closes, a forwarded answer closes it, or the proxy stops (at most 10 000).
fn serve(
    mut conn: TcpStream,
    upstream: u16,
    rules: &Mutex<Vec<Rule>>,
    requests: &Mutex<Vec<String>>,
    faults: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    for _ in 0..10_000 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Some((head, body)) = read_request(&mut conn) else {
            return;
        };
        let action = form_value(&body, "Action").unwrap_or_default();
        requests.lock().expect("requests").push(action.clone());
        let fault = {
            let mut rules = rules.lock().expect("rules");
            let hit = rules
                .iter_mut()
                .find(|r| r.count > 0 && r.action.as_ref().is_none_or(|a| *a == action));
            hit.map(|r| {
                r.count -= 1;
                r.fault
            })
        };
        if let Some(f) = fault {
            faults.fetch_add(1, Ordering::SeqCst);
            let (status, reason, code) = match f {
                Fault::Throttle => (503, "Service Unavailable", "RequestLimitExceeded"),
                Fault::ServerError => (500, "Internal Server Error", "InternalError"),
                Fault::AuthFailure => (401, "Unauthorized", "AuthFailure"),
                Fault::DropAnswer => {
                    let _ = forward(upstream, &head, &body);
                    let _ = conn.shutdown(Shutdown::Both);
                    return;
                }
            };
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
                 <Message>injected by the test proxy</Message></Error></Errors><RequestID>test</RequestID></Response>"
            );
            let answer = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                xml.len()
            );
            if conn.write_all(answer.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        if let Some(answer) = forward(upstream, &head, &body) {
            let _ = conn.write_all(&answer);
        }
        let _ = conn.shutdown(Shutdown::Both);
        return;
    }
}

/// Sends one request upstream with `Connection: close`; the whole answer.
fn forward(upstream: u16, head: &str, body: &str) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).ok()?;
    up.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head: String = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let mut out = head.into_bytes();
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    up.write_all(&out).ok()?;
    let mut answer = Vec::new();
    let _ = up.read_to_end(&mut answer);
    Some(answer)
}

/// Reads one request: (request line and headers without the blank line, body).
fn read_request(conn: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let n = conn.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&byte[..n]);
    }
    Some((head, String::from_utf8_lossy(&body).into_owned()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&')
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key))
        .map(|(_, v)| v.to_string())
}
