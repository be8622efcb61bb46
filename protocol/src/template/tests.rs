use std::path::PathBuf;

use super::*;

fn starter(name: &str) -> Template {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../templates")
        .join(name);
    let files = read_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    parse(files).unwrap_or_else(|e| panic!("{e}"))
}

fn file(path: &str, contents: &str) -> TemplateFile {
    TemplateFile {
        path: path.into(),
        contents: contents.as_bytes().to_vec(),
    }
}

fn names<'a>(items: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    items.into_iter().map(String::as_str).collect()
}

const MANIFEST: &str = "name = \"web-db\"\nruntime = [\"docker\"]\n\
                        [resources]\nvcpus = 1\nmemory = \"1GiB\"\ndisk = \"1GiB\"\n\
                        [params.DB_PASSWORD]\ndefault = \"dev\"\nsecret = true\n\
                        [params.TAG]\n";

const COMPOSE: &str = "services:\n  db:\n    image: postgres:${TAG}\n    \
                       environment:\n      POSTGRES_PASSWORD: ${DB_PASSWORD}\n    \
                       env_file: db.env\n";

#[test]
fn the_minimal_starter_parses() {
    let t = starter("minimal");
    let m = &t.manifest;
    assert_eq!(m.name, "minimal");
    assert_eq!(m.runtime, [RuntimePref::Kvm, RuntimePref::Docker]);
    assert_eq!(m.image.as_deref(), Some("tiny"));
    assert_eq!(
        (
            m.resources.vcpus,
            m.resources.memory_mb,
            m.resources.disk_gb
        ),
        (1, 256, 1)
    );
    assert_eq!(m.ports.len(), 1);
    assert_eq!((m.ports[0].name.as_str(), m.ports[0].port), ("web", 8080));
    assert!(m.params.is_empty());
    let web = &t.compose.services["web"];
    assert_eq!(t.compose.service_order, ["web"]);
    assert_eq!(web.image, "metrom-test/busybox:1");
    assert_eq!(
        web.command.as_deref(),
        Some(&["httpd", "-f", "-p", "8080"].map(String::from)[..])
    );
    assert!(matches!(
        web.healthcheck.as_ref().unwrap().test,
        Some(HealthTest::Cmd(_))
    ));
    assert_eq!(web.ports[0].published, Some(8080));
    assert_eq!(
        names(t.files.iter().map(|f| &f.path)),
        ["compose.yaml", "metrom.toml"]
    );
}

#[test]
fn the_web_db_starter_parses() {
    let t = starter("web-db");
    let m = &t.manifest;
    assert_eq!(m.name, "web-db");
    assert_eq!(m.image.as_deref(), Some("debian-12"));
    assert_eq!(
        (
            m.resources.vcpus,
            m.resources.memory_mb,
            m.resources.disk_gb
        ),
        (2, 4096, 20)
    );
    assert_eq!(names(m.ports.iter().map(|p| &p.name)), ["web", "postgres"]);
    assert_eq!(
        names(m.params.keys()),
        ["APP_BRANCH", "APP_REPO", "DB_PASSWORD"]
    );
    assert!(m.params["DB_PASSWORD"].secret);
    assert!(m.packages.contains(&"git".to_string()));
    assert_eq!(m.repos[0].path, "app");
    let schedule = m.policies.schedule.as_ref().unwrap();
    assert_eq!(schedule.timezone, "Asia/Seoul");
    assert_eq!(t.compose.service_order, ["web", "db"]);
    assert_eq!(
        t.compose.services["web"].depends_on["db"],
        Condition::ServiceHealthy
    );
    assert_eq!(t.compose.services["web"].env_file, ["app.env"]);
    assert_eq!(t.compose.services["db"].image, "postgres:16");
    assert_eq!(
        t.compose.services["db"].healthcheck.as_ref().unwrap().test,
        Some(HealthTest::Shell("pg_isready -U app -d app".into()))
    );
    assert!(t.compose.volumes.contains_key("db-data"));
    assert_eq!(t.compose.startup_order(), ["db", "web"]);
    // The defaults went in at push time.
    assert_eq!(
        t.compose.services["web"].environment["DATABASE_URL"],
        "postgresql://app:dev@db:5432/app"
    );
    let repos = m.repos_for(&BTreeMap::new()).unwrap();
    assert_eq!(repos[0].url, "https://git.lan/team/app.git");
    assert_eq!(repos[0].branch.as_deref(), Some("main"));
}

#[test]
fn the_nextcloud_starter_parses() {
    let t = starter("nextcloud");
    let m = &t.manifest;
    assert_eq!(m.name, "nextcloud");
    assert_eq!(m.image.as_deref(), Some("debian-12"));
    assert_eq!((m.ports[0].name.as_str(), m.ports[0].port), ("web", 8080));
    assert_eq!(
        names(m.params.keys()),
        [
            "ADMIN_PASSWORD",
            "ADMIN_USER",
            "DB_PASSWORD",
            "DB_ROOT_PASSWORD",
            "TRUSTED_DOMAINS"
        ]
    );
    assert!(m.params["ADMIN_PASSWORD"].is_required());
    assert_eq!(t.compose.service_order, ["app", "db", "redis"]);
    assert_eq!(
        t.compose.images(),
        ["nextcloud:29-apache", "mariadb:11", "redis:7-alpine"]
    );
    assert_eq!(t.compose.startup_order(), ["db", "redis", "app"]);
    assert_eq!(
        names(t.compose.volumes.keys()),
        ["db", "nextcloud", "redis"]
    );
    for s in t.compose.services.values() {
        assert!(s.healthcheck.is_some());
    }
    // The required password is a placeholder until an environment gives it.
    assert_eq!(
        t.compose.services["app"].environment["NEXTCLOUD_ADMIN_PASSWORD"],
        PLACEHOLDER
    );
    let given = BTreeMap::from([("ADMIN_PASSWORD".to_string(), "s3cret".to_string())]);
    let c = t.compose_for(&given).unwrap();
    assert_eq!(
        c.services["app"].environment["NEXTCLOUD_ADMIN_PASSWORD"],
        "s3cret"
    );
    let e = t.compose_for(&BTreeMap::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "template nextcloud: parameter 'ADMIN_PASSWORD' is required (it has no default): give it a value"
    );
}

#[test]
fn parse_checks_the_whole_folder() {
    let files = vec![
        file("metrom.toml", MANIFEST),
        file("compose.yaml", COMPOSE),
        file("db.env", "A=1"),
    ];
    let t = parse(files.clone()).unwrap();
    assert_eq!(t.compose.services["db"].image, "postgres:1");
    assert_eq!(
        t.compose.services["db"].environment["POSTGRES_PASSWORD"],
        "dev"
    );
    assert_eq!(t.digest, digest(&files));
    assert_eq!(t.file("db.env").unwrap().contents, b"A=1");
    let vars = BTreeMap::from([("TAG".to_string(), "16".to_string())]);
    assert_eq!(
        t.compose_for(&vars).unwrap().services["db"].image,
        "postgres:16"
    );

    // Every error names the template once metrom.toml has named it.
    let e = parse(vec![
        file("metrom.toml", MANIFEST),
        file("compose.yaml", COMPOSE),
    ])
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "template web-db: compose.yaml line 6: env_file 'db.env' is not in the template: \
         add the file 'db.env' to the template folder"
    );
    let e = parse(vec![file("metrom.toml", MANIFEST)]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "template web-db: compose.yaml: missing: add it, or name another file with [compose] \
         file in metrom.toml"
    );
    let e = parse(vec![file("compose.yaml", COMPOSE)]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "metrom.toml: missing: a template folder holds metrom.toml (see docs/templates.md)"
    );
    let compose = COMPOSE.replace("${TAG}", "${VERSION}");
    let e = parse(vec![
        file("metrom.toml", MANIFEST),
        file("compose.yaml", &compose),
        file("db.env", ""),
    ])
    .unwrap_err();
    assert_eq!(e.line, Some(3));
    assert_eq!(e.template.as_deref(), Some("web-db"));
    assert!(
        e.message.starts_with("variable 'VERSION' is not set"),
        "{e}"
    );
    let e = parse(vec![
        file("metrom.toml", MANIFEST),
        TemplateFile {
            path: "compose.yaml".into(),
            contents: vec![0xff, 0xfe],
        },
    ])
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "template web-db: compose.yaml: not UTF-8 text: save it as UTF-8"
    );
    let e = parse(vec![file("metrom.toml", MANIFEST), file("../x", "")]).unwrap_err();
    assert_eq!(e.file, "../x");
    assert!(e.message.contains("escapes the template folder"), "{e}");
}

#[test]
fn another_compose_file_can_be_named() {
    let manifest = format!("{MANIFEST}[compose]\nfile = \"deploy/stack.yml\"\n");
    let files = vec![
        file("metrom.toml", &manifest),
        file("deploy/stack.yml", &COMPOSE.replace("db.env", "../db.env")),
        file("db.env", ""),
    ];
    let t = parse(files).unwrap();
    assert_eq!(t.compose.services["db"].env_file, ["db.env"]);
    let e = parse(vec![file("metrom.toml", &manifest)]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "template web-db: deploy/stack.yml: missing: it is named by [compose] file in metrom.toml"
    );
}

#[test]
fn a_pulled_template_reads_back_with_the_same_digest() {
    let t = starter("web-db");
    let dir = tempfile::tempdir().unwrap();
    write_dir(&t.files, dir.path(), false).unwrap();
    let again = parse(read_dir(dir.path()).unwrap()).unwrap();
    assert_eq!(again.digest, t.digest);
    assert_eq!(again, t);
}
