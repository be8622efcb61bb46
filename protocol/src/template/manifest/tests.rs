use std::time::Duration;

use super::*;

const FULL: &str = r#"name = "web-db"
description = "Web app with PostgreSQL"
runtime = ["kvm", "docker"]
image = "debian-12"
registry = "registry.lan:5000"
packages = ["git", "curl", "g++", "libpq5", "python3.11"]

[resources]
vcpus = 2
memory = "4GiB"
disk = "20GiB"

[[ports]]
name = "web"
port = 8080

[[ports]]
name = "dns"
port = 8080
protocol = "udp"

[[repos]]
url = "https://git.lan/team/app.git"
branch = "main"

[[repos]]
url = "git@git.lan:team/tools.git"
revision = "1a2b3c4d"
path = "src/tools"

[[repos]]
url = "svn://svn.lan/repos/legacy/trunk"
type = "svn"
revision = "1234"

[params.DB_PASSWORD]
default = "dev"
description = "Database password"
secret = true

[params.APP_TOKEN]

[policies]
ttl = "14d"
ttl_warning = "1d"
idle = "60m"

[policies.schedule]
timezone = "Asia/Seoul"
days = ["mon", "tue", "wed", "thu", "fri"]
hours = ["09:00-12:00", "13:00-19:00"]
holidays = ["2026-12-25"]

[compose]
file = "deploy/compose.yaml"
"#;

const MINIMAL: &str = r#"name = "tiny"
image = "tiny"
[resources]
vcpus = 1
memory = "256MiB"
disk = "1GiB"
"#;

/// The error a manifest gives, as a person reads it.
fn error(text: &str) -> TemplateError {
    Manifest::parse(text).expect_err("the manifest should be refused")
}

/// `MINIMAL` with `line` replaced by `with` (or appended when `line` is "").
fn minimal_with(line: &str, with: &str) -> String {
    if line.is_empty() {
        format!("{MINIMAL}{with}\n")
    } else {
        assert!(MINIMAL.contains(line), "{line}");
        MINIMAL.replace(line, with)
    }
}

#[test]
fn reads_every_key() {
    let m = Manifest::parse(FULL).unwrap();
    assert_eq!(m.name, "web-db");
    assert_eq!(m.description, "Web app with PostgreSQL");
    assert_eq!(m.runtime, [RuntimePref::Kvm, RuntimePref::Docker]);
    assert_eq!(m.image.as_deref(), Some("debian-12"));
    assert_eq!(m.registry.as_deref(), Some("registry.lan:5000"));
    assert_eq!(
        m.resources,
        Resources {
            vcpus: 2,
            memory_mb: 4096,
            disk_gb: 20
        }
    );
    assert_eq!(m.ports.len(), 2);
    assert_eq!(m.ports[0].protocol, Protocol::Tcp);
    assert_eq!(m.ports[1].protocol, Protocol::Udp);
    assert_eq!(m.packages.len(), 5);
    assert_eq!(m.repos[0].path, "app");
    assert_eq!(m.repos[0].branch.as_deref(), Some("main"));
    assert_eq!(m.repos[0].kind, RepoKind::Git);
    assert_eq!(m.repos[1].path, "src/tools");
    assert_eq!(m.repos[2].kind, RepoKind::Svn);
    assert_eq!(m.repos[2].path, "legacy");
    assert_eq!(m.params.len(), 2);
    assert!(m.params["DB_PASSWORD"].secret);
    assert_eq!(m.params["DB_PASSWORD"].default.as_deref(), Some("dev"));
    assert!(m.params["APP_TOKEN"].is_required());
    assert_eq!(m.policies.ttl, Some(Duration::from_secs(14 * 86400)));
    assert_eq!(m.policies.schedule.as_ref().unwrap().hours.len(), 2);
    assert_eq!(m.compose_file, "deploy/compose.yaml");
}

#[test]
fn fills_defaults() {
    let m = Manifest::parse(MINIMAL).unwrap();
    assert_eq!(m.runtime, [RuntimePref::Kvm, RuntimePref::Docker]);
    assert_eq!(m.description, "");
    assert_eq!(m.compose_file, "compose.yaml");
    assert!(m.policies.is_empty());
    assert!(m.ports.is_empty() && m.repos.is_empty() && m.params.is_empty());
    assert_eq!(m.resources.memory_mb, 256);
    assert_eq!(RuntimePref::Kvm.on_prem(), Some(RuntimeKind::Kvm));
    assert_eq!(RuntimePref::Docker.on_prem(), Some(RuntimeKind::Docker));
    assert_eq!(RuntimePref::Cloud.on_prem(), None);
}

#[test]
fn docker_only_needs_no_image() {
    let text = minimal_with("image = \"tiny\"\n", "runtime = [\"docker\"]\n");
    assert_eq!(Manifest::parse(&text).unwrap().image, None);
    let e = error(&minimal_with(
        "image = \"tiny\"\n",
        "runtime = [\"docker\", \"cloud\"]\n",
    ));
    assert_eq!(
        e.to_string(),
        "template tiny: metrom.toml line 2: image is required: runtime 'cloud' boots a VM from \
         a base image (such as image = \"debian-12\"); or set runtime = [\"docker\"]"
    );
}

#[test]
fn bad_toml_names_the_line() {
    let e = error("name = \"x\"\n[resources\nvcpus = 1\n");
    assert_eq!(e.file, "metrom.toml");
    assert_eq!(e.line, Some(2));
    assert_eq!(e.template, None);
    assert!(e.to_string().starts_with("metrom.toml line 2: "), "{e}");
}

#[test]
fn unknown_keys_are_named_with_the_supported_ones() {
    let e = error(&minimal_with("", "cpus = 4"));
    assert_eq!(e.line, Some(7));
    assert_eq!(e.key.as_deref(), Some("resources.cpus"));
    assert_eq!(
        e.to_string(),
        "metrom.toml line 7: unknown key 'cpus' (supported: vcpus, memory, disk)"
    );
    let e = error(&format!("colour = \"red\"\n{MINIMAL}"));
    assert_eq!(e.line, Some(1));
    assert_eq!(e.key.as_deref(), Some("colour"));
    assert!(
        e.message
            .starts_with("unknown key 'colour' (supported: name, description, runtime")
    );
    let e = error(&minimal_with(
        "",
        "[[ports]]\nname = \"web\"\nport = 80\nexpose = true",
    ));
    assert_eq!(e.line, Some(10));
    assert_eq!(e.key.as_deref(), Some("ports.expose"));
    assert!(e.message.starts_with("unknown key 'expose'"), "{e}");
    let e = error(&minimal_with(
        "",
        "[policies]\nttl = \"1d\"\nstop_after = \"1h\"",
    ));
    assert_eq!(e.key.as_deref(), Some("policies.stop_after"));
    assert_eq!(e.line, Some(9));
}

#[test]
fn missing_keys_and_wrong_types() {
    let e = error("name = \"x\"\nimage = \"tiny\"\n");
    assert_eq!(e.message, "missing key 'resources'");
    let e = error(&minimal_with("vcpus = 1\n", ""));
    assert_eq!(e.message, "missing key 'vcpus'");
    assert_eq!(e.key.as_deref(), Some("resources.vcpus"));
    let e = error(&minimal_with("vcpus = 1", "vcpus = \"two\""));
    assert_eq!(e.line, Some(4));
    assert_eq!(e.key.as_deref(), Some("resources.vcpus"));
    let e = error(&format!("runtime = [\"vm\"]\n{MINIMAL}"));
    assert_eq!(e.line, Some(1));
    assert!(e.message.contains("unknown variant `vm`"), "{e}");
}

#[test]
fn names_are_checked() {
    for bad in ["Web", "1web", "web_db", "", &"a".repeat(41)] {
        let e = error(&MINIMAL.replace("name = \"tiny\"", &format!("name = \"{bad}\"")));
        assert_eq!(e.line, Some(1));
        assert_eq!(e.key.as_deref(), Some("name"));
        assert!(
            e.message.contains("1 to 40 characters of a-z, 0-9 and '-'"),
            "{e}"
        );
    }
}

#[test]
fn resources_out_of_range() {
    for (line, with, want) in [
        (
            "vcpus = 1",
            "vcpus = 0",
            "line 4: vcpus = 0 is out of range: 1 to 64",
        ),
        ("vcpus = 1", "vcpus = 65", "vcpus = 65 is out of range"),
        (
            "memory = \"256MiB\"",
            "memory = \"64MiB\"",
            "line 5: memory = \"64MiB\" is out of range: 128MiB to 256GiB",
        ),
        ("memory = \"256MiB\"", "memory = \"512GiB\"", "out of range"),
        (
            "memory = \"256MiB\"",
            "memory = \"4GB\"",
            "invalid size '4GB': write a whole number with MiB, GiB or TiB",
        ),
        ("memory = \"256MiB\"", "memory = \"1.5GiB\"", "invalid size"),
        (
            "disk = \"1GiB\"",
            "disk = \"1536MiB\"",
            "line 6: disk = \"1536MiB\" is not a whole number of GiB",
        ),
        (
            "disk = \"1GiB\"",
            "disk = \"5TiB\"",
            "out of range: 1GiB to 4TiB",
        ),
        ("disk = \"1GiB\"", "disk = \"0GiB\"", "out of range"),
    ] {
        let e = error(&minimal_with(line, with));
        assert!(e.to_string().contains(want), "{with}: {e}");
        assert!(e.key.as_deref().unwrap().starts_with("resources."));
    }
    let m = Manifest::parse(&minimal_with("disk = \"1GiB\"", "disk = \"4TiB\"")).unwrap();
    assert_eq!(m.resources.disk_gb, 4096);
}

#[test]
fn ports_are_unique_and_in_range() {
    let port = |name: &str, n: i64, proto: &str| {
        format!("[[ports]]\nname = \"{name}\"\nport = {n}\nprotocol = \"{proto}\"\n")
    };
    let e = error(&minimal_with(
        "",
        &(port("web", 8080, "tcp") + &port("api", 8080, "tcp")),
    ));
    assert_eq!(
        e.to_string(),
        "template tiny: metrom.toml line 13: port 8080/tcp is listed twice ('web' and 'api')"
    );
    let e = error(&minimal_with(
        "",
        &(port("web", 80, "tcp") + &port("web", 81, "tcp")),
    ));
    assert_eq!(e.message, "port name 'web' is used twice");
    assert_eq!(e.line, Some(12));
    let e = error(&minimal_with("", &port("web", 70000, "tcp")));
    assert_eq!(e.message, "port 70000 is out of range: 1 to 65535");
    let e = error(&minimal_with("", &port("Web", 80, "tcp")));
    assert!(e.message.starts_with("port name 'Web'"), "{e}");
    let e = error(&minimal_with("", &port("web", 80, "sctp")));
    assert!(e.message.contains("unknown variant `sctp`"), "{e}");
}

#[test]
fn packages_and_params_are_checked() {
    let e = error(&format!("packages = [\"git\", \"Curl\"]\n{MINIMAL}"));
    assert_eq!(e.line, Some(1));
    assert!(e.message.starts_with("invalid package name 'Curl'"), "{e}");
    let e = error(&format!("packages = [\"git\", \"git\"]\n{MINIMAL}"));
    assert_eq!(e.message, "package 'git' is listed twice");
    let e = error(&minimal_with("", "[params.DB-PASSWORD]\ndefault = \"x\""));
    assert_eq!(e.key.as_deref(), Some("params.DB-PASSWORD"));
    assert_eq!(e.line, Some(7));
    assert!(
        e.message
            .starts_with("invalid parameter name 'DB-PASSWORD'"),
        "{e}"
    );
    let e = error(&minimal_with("", "[params.A]\nrequired = true"));
    assert_eq!(e.key.as_deref(), Some("params.A.required"));
    assert_eq!(e.line, Some(8));
    assert!(
        e.message
            .starts_with("unknown key 'required' (supported: default, description, secret)"),
        "{e}"
    );
}

#[test]
fn repos_are_checked() {
    let repo = |body: &str| minimal_with("", &format!("[[repos]]\n{body}"));
    for (body, want) in [
        (
            "url = \"ftp://x/y.git\"",
            "git URL 'ftp://x/y.git': scheme 'ftp' is not one of https, http, git, ssh, file",
        ),
        ("url = \"not a url\"", "a URL has no spaces"),
        ("url = \"just-a-name\"", "not a URL"),
        ("url = \"https:///x\"", "no host"),
        (
            "url = \"ssh://git.lan/x\"\ntype = \"svn\"",
            "svn URL 'ssh://git.lan/x': scheme 'ssh'",
        ),
        (
            "url = \"svn://s/r\"\ntype = \"svn\"\nbranch = \"b\"",
            "branch applies to git repositories",
        ),
        (
            "url = \"svn://s/r\"\ntype = \"svn\"\nrevision = \"r12\"",
            "svn revision 'r12': write a number or HEAD",
        ),
        (
            "url = \"https://g/a.git\"\nrevision = \"main\"",
            "git revision 'main': write a commit id (hex); for a branch, use branch",
        ),
        (
            "url = \"https://g/a.git\"\npath = \"../escape\"",
            "path '../escape': path escapes the template folder",
        ),
        (
            "url = \"https://g/a.git\"\npath = \"/abs\"",
            "path '/abs': absolute path",
        ),
        (
            "url = \"https://g/\"",
            "cannot derive a path from 'https://g/': set path",
        ),
        (
            "url = \"https://g/a.git\"\ntype = \"hg\"",
            "unknown variant `hg`",
        ),
    ] {
        let e = error(&repo(body));
        assert!(e.message.contains(want), "{body}: {e}");
        assert!(e.line.unwrap() >= 8, "{body}: {e}");
    }
    let e = error(&minimal_with(
        "",
        "[[repos]]\nurl = \"https://a/app.git\"\n[[repos]]\nurl = \"ssh://b/team/app\"",
    ));
    assert_eq!(
        e.to_string(),
        "template tiny: metrom.toml line 10: path 'app' is used by 'https://a/app.git' too: set a different path"
    );
}

#[test]
fn default_repo_paths() {
    for (url, kind, want) in [
        ("https://git.lan/team/app.git", RepoKind::Git, Some("app")),
        ("git@git.lan:team/app.git", RepoKind::Git, Some("app")),
        ("git.lan:app", RepoKind::Git, Some("app")),
        ("file:///srv/git/app/", RepoKind::Git, Some("app")),
        (
            "https://svn.lan/repos/legacy/trunk",
            RepoKind::Svn,
            Some("legacy"),
        ),
        ("https://svn.lan/trunk", RepoKind::Svn, Some("trunk")),
        ("https://git.lan/", RepoKind::Git, None),
    ] {
        assert_eq!(default_repo_path(url, kind).as_deref(), want, "{url}");
    }
}

#[test]
fn policy_errors_point_at_their_key() {
    let policies = |body: &str| minimal_with("", &format!("[policies]\n{body}"));
    let e = error(&policies(
        "ttl = \"1d\"\nidle = \"1h\"\nttl_warning = \"2d\"",
    ));
    assert_eq!(
        e.to_string(),
        "template tiny: metrom.toml line 10: ttl_warning (2d) must be shorter than ttl (1d)"
    );
    assert_eq!(e.key.as_deref(), Some("policies.ttl_warning"));
    let e = error(&policies("ttl = \"14x\""));
    assert_eq!(e.line, Some(8));
    assert_eq!(e.key.as_deref(), Some("policies.ttl"));
    assert!(e.message.contains("invalid duration '14x'"), "{e}");

    let schedule = |body: &str| {
        policies(&format!(
            "idle = \"1h\"\n[policies.schedule]\ntimezone = \"Asia/Seoul\"\n{body}"
        ))
    };
    let e = error(&schedule(
        "days = [\"mon\"]\nhours = [\"09:00-12:00\", \"11:00-13:00\"]",
    ));
    assert_eq!(e.line, Some(12));
    assert_eq!(e.key.as_deref(), Some("policies.schedule.hours"));
    assert_eq!(
        e.message,
        "hours '09:00-12:00' and '11:00-13:00' overlap: merge them"
    );
    let e = error(&schedule(
        "days = [\"mon\", \"someday\"]\nhours = [\"09:00-12:00\"]",
    ));
    assert_eq!(e.line, Some(11));
    assert_eq!(e.key.as_deref(), Some("policies.schedule.days"));
    assert!(e.message.starts_with("unknown weekday 'someday'"), "{e}");
    let e = error(&schedule("days = [\"mon\"]\nhours = []"));
    assert!(e.message.starts_with("no hours"), "{e}");
    let e = error(&schedule(
        "days = [\"mon\"]\nhours = [\"09:00-12:00\"]\nholidays = [\"2026-02-30\"]",
    ));
    assert_eq!(e.line, Some(13));
    assert!(e.message.starts_with("invalid holiday '2026-02-30'"), "{e}");
    let e = error(&policies(
        "[policies.schedule]\ntimezone = \"Seoul\"\ndays = [\"mon\"]\nhours = [\"09:00-12:00\"]",
    ));
    assert_eq!(e.line, Some(9));
    assert_eq!(e.key.as_deref(), Some("policies.schedule.timezone"));
    assert!(e.message.starts_with("unknown time zone 'Seoul'"), "{e}");
}

#[test]
fn compose_file_must_stay_inside() {
    let e = error(&minimal_with("", "[compose]\nfile = \"../compose.yaml\""));
    assert_eq!(e.line, Some(8));
    assert_eq!(e.key.as_deref(), Some("compose.file"));
    assert!(e.message.contains("escapes the template folder"), "{e}");
}

#[test]
fn sizes() {
    assert_eq!(parse_size_mib("512MiB"), Ok(512));
    assert_eq!(parse_size_mib("4 GiB"), Ok(4096));
    assert_eq!(parse_size_mib("1TiB"), Ok(1 << 20));
    assert!(parse_size_mib("GiB").is_err());
    assert!(parse_size_mib("4").is_err());
    assert!(parse_size_mib("4gib").is_err());
    assert!(parse_size_mib("99999999999999999999TiB").is_err());
}

#[test]
fn repos_may_use_parameters() {
    let text = minimal_with(
        "",
        "[params.APP_REPO]\n\
         [params.BRANCH]\ndefault = \"main\"\n\
         [[repos]]\nurl = \"${APP_REPO}\"\nbranch = \"${BRANCH}\"\npath = \"app\"\n\
         [[repos]]\nurl = \"https://git.lan/${BRANCH}/tools.git\"\npath = \"tools\"",
    );
    let m = Manifest::parse(&text).unwrap();
    assert_eq!(m.repos[0].url, "${APP_REPO}");
    let given = BTreeMap::from([("APP_REPO".to_string(), "git@git.lan:me/app.git".to_string())]);
    let repos = m.repos_for(&given).unwrap();
    assert_eq!(repos[0].url, "git@git.lan:me/app.git");
    assert_eq!(repos[0].branch.as_deref(), Some("main"));
    assert_eq!(repos[0].path, "app");
    assert_eq!(repos[1].url, "https://git.lan/main/tools.git");

    let bad = BTreeMap::from([("APP_REPO".to_string(), "ftp://x/app".to_string())]);
    let e = m.repos_for(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        "template tiny: git URL 'ftp://x/app': scheme 'ftp' is not one of https, http, git, ssh, \
         file (such as https://git.lan/team/app.git or git@git.lan:team/app.git)"
    );
    assert_eq!(e.key.as_deref(), Some("repos.url"));
    let e = m.repos_for(&BTreeMap::new()).unwrap_err();
    assert!(
        e.message.starts_with("parameter 'APP_REPO' is required"),
        "{e}"
    );

    // Checked at parse time when the defaults give the value.
    let e = error(&text.replace("default = \"main\"", "default = \"has space\""));
    assert_eq!(e.key.as_deref(), Some("repos.branch"));
    assert_eq!(e.line, Some(12));
    // Undeclared parameters and underivable paths are refused.
    let e = error(&text.replace("${APP_REPO}", "${APP_URL}"));
    assert_eq!(e.line, Some(11));
    assert!(
        e.message.starts_with("variable 'APP_URL' is not set"),
        "{e}"
    );
    let e = error(&text.replacen("path = \"app\"\n", "", 1));
    assert!(
        e.message
            .starts_with("set path: the URL '${APP_REPO}' uses a parameter"),
        "{e}"
    );
}
