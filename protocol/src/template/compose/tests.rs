use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;

fn parse(yaml: &str) -> Compose {
    Compose::parse(yaml, "compose.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// The error a compose file gives, as a person reads it.
fn error(yaml: &str) -> TemplateError {
    Compose::parse(yaml, "compose.yaml").expect_err("the compose file should be refused")
}

fn with_files(yaml: &str, file: &str, paths: &[&str]) -> Result<Compose, TemplateError> {
    let files: BTreeSet<&str> = paths.iter().copied().collect();
    read(yaml, file, &BTreeMap::new(), Some(&files))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn reads_every_supported_key_in_every_form() {
    let c = parse(
        r#"
version: "3.9"
name: web-db
x-common: &common
  restart: unless-stopped
  labels: {team: web}
services:
  web:
    <<: *common
    image: nginx:1.27
    command: nginx -g 'daemon off;' -c "/etc/nginx/my conf"
    entrypoint: ["/docker-entrypoint.sh"]
    environment:
      VERSION: 1.10
      DEBUG: true
      EMPTY: ""
    ports:
      - 8080
      - "8081:80"
      - "127.0.0.1:8443:443/tcp"
      - "127.0.0.1::9000"
      - "[::1]:5353:53/udp"
      - target: 81
        published: 8082
        protocol: udp
        host_ip: 0.0.0.0
    volumes:
      - data:/var/lib/data
      - /var/cache/x
      - /srv/shared:/shared:ro
      - type: volume
        source: data
        target: /data2
        read_only: true
      - type: volume
        target: /scratch
    depends_on:
      - db
    networks: [back, default]
    working_dir: /srv
    user: "1000:1000"
    x-note: ignored
  db:
    image: postgres:16
    environment:
      - POSTGRES_PASSWORD=secret
      - POSTGRES_DB=app=1
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U postgres"]
      interval: 5s
      timeout: 1m30s
      retries: 10
      start_period: 500ms
    restart: on-failure:3
    networks:
      back:
    labels:
      - "com.example.role=db"
      - "flag"
  job:
    image: busybox
    command: [echo, "hello world"]
    depends_on:
      db: {condition: service_healthy}
      web:
        condition: service_started
    healthcheck:
      test: curl -f http://localhost
    restart: "no"
  quiet:
    image: busybox
    healthcheck:
      disable: true
    depends_on:
      job: {condition: service_completed_successfully}
    restart: always
volumes:
  data:
  logs: {}
  labelled:
    labels: {backup: "daily"}
networks:
  back: {}
  front:
"#,
    );
    assert_eq!(c.name.as_deref(), Some("web-db"));
    assert_eq!(c.service_order, strings(&["web", "db", "job", "quiet"]));
    assert_eq!(c.volumes.len(), 3);
    assert_eq!(c.volumes["labelled"].labels["backup"], "daily");
    assert_eq!(c.networks, ["back", "front"].map(String::from).into());

    let web = &c.services["web"];
    assert_eq!(web.image, "nginx:1.27");
    assert_eq!(
        web.command,
        Some(strings(&[
            "nginx",
            "-g",
            "daemon off;",
            "-c",
            "/etc/nginx/my conf"
        ]))
    );
    assert_eq!(web.entrypoint, Some(strings(&["/docker-entrypoint.sh"])));
    assert_eq!(web.environment["VERSION"], "1.10");
    assert_eq!(web.environment["DEBUG"], "true");
    assert_eq!(web.environment["EMPTY"], "");
    // Merged from the x-common anchor.
    assert_eq!(web.restart, Some(Restart::UnlessStopped));
    assert_eq!(web.labels["team"], "web");
    let tcp = Protocol::Tcp;
    assert_eq!(
        web.ports,
        [
            PortMapping {
                target: 8080,
                published: None,
                host_ip: None,
                protocol: tcp
            },
            PortMapping {
                target: 80,
                published: Some(8081),
                host_ip: None,
                protocol: tcp
            },
            PortMapping {
                target: 443,
                published: Some(8443),
                host_ip: Some("127.0.0.1".parse().unwrap()),
                protocol: tcp
            },
            PortMapping {
                target: 9000,
                published: None,
                host_ip: Some("127.0.0.1".parse().unwrap()),
                protocol: tcp
            },
            PortMapping {
                target: 53,
                published: Some(5353),
                host_ip: Some("::1".parse().unwrap()),
                protocol: Protocol::Udp
            },
            PortMapping {
                target: 81,
                published: Some(8082),
                host_ip: Some("0.0.0.0".parse().unwrap()),
                protocol: Protocol::Udp
            },
        ]
    );
    let mount = |source, target: &str, read_only| Mount {
        source,
        target: target.into(),
        read_only,
    };
    assert_eq!(
        web.volumes,
        [
            mount(MountSource::Volume("data".into()), "/var/lib/data", false),
            mount(MountSource::Anonymous, "/var/cache/x", false),
            mount(MountSource::Host("/srv/shared".into()), "/shared", true),
            mount(MountSource::Volume("data".into()), "/data2", true),
            mount(MountSource::Anonymous, "/scratch", false),
        ]
    );
    assert_eq!(web.depends_on["db"], Condition::ServiceStarted);
    assert_eq!(web.networks, strings(&["back", "default"]));
    assert_eq!(web.working_dir.as_deref(), Some("/srv"));
    assert_eq!(web.user.as_deref(), Some("1000:1000"));

    let db = &c.services["db"];
    assert_eq!(db.environment["POSTGRES_DB"], "app=1");
    let h = db.healthcheck.as_ref().unwrap();
    assert_eq!(
        h.test,
        Some(HealthTest::Shell("pg_isready -U postgres".into()))
    );
    assert_eq!(h.interval, Some(Duration::from_secs(5)));
    assert_eq!(h.timeout, Some(Duration::from_secs(90)));
    assert_eq!(h.retries, Some(10));
    assert_eq!(h.start_period, Some(Duration::from_millis(500)));
    assert_eq!(
        db.restart,
        Some(Restart::OnFailure {
            max_retries: Some(3)
        })
    );
    assert_eq!(db.networks, strings(&["back"]));
    assert_eq!(db.labels["com.example.role"], "db");
    assert_eq!(db.labels["flag"], "");

    let job = &c.services["job"];
    assert_eq!(job.command, Some(strings(&["echo", "hello world"])));
    assert_eq!(job.depends_on["db"], Condition::ServiceHealthy);
    assert_eq!(job.depends_on["web"], Condition::ServiceStarted);
    assert_eq!(
        job.healthcheck.as_ref().unwrap().test,
        Some(HealthTest::Shell("curl -f http://localhost".into()))
    );
    assert_eq!(job.restart, Some(Restart::No));

    let quiet = &c.services["quiet"];
    assert!(quiet.healthcheck.as_ref().unwrap().is_disabled());
    assert_eq!(
        quiet.depends_on["job"],
        Condition::ServiceCompletedSuccessfully
    );
    assert_eq!(quiet.restart, Some(Restart::Always));

    assert_eq!(c.images(), ["nginx:1.27", "postgres:16", "busybox"]);
    assert_eq!(c.startup_order(), ["db", "web", "job", "quiet"]);
}

#[test]
fn healthcheck_test_forms() {
    let test = |t: &str| {
        let c = parse(&format!(
            "services:\n  a:\n    image: x\n    healthcheck:\n      test: {t}\n"
        ));
        c.services["a"].healthcheck.clone().unwrap().test.unwrap()
    };
    assert_eq!(
        test("[\"CMD\", \"curl\", \"-f\", \"http://x\"]"),
        HealthTest::Cmd(strings(&["curl", "-f", "http://x"]))
    );
    assert_eq!(test("[\"NONE\"]"), HealthTest::Disabled);
    assert_eq!(
        test("wget -q -O- localhost"),
        HealthTest::Shell("wget -q -O- localhost".into())
    );
    for (t, want) in [
        (
            "[\"CURL\", \"x\"]",
            "a test list starts with CMD, CMD-SHELL or NONE, not 'CURL'",
        ),
        ("[\"CMD\"]", "CMD needs a program"),
        (
            "[\"CMD-SHELL\", \"a\", \"b\"]",
            "CMD-SHELL takes one command string",
        ),
        ("[]", "the test is empty"),
    ] {
        let e = error(&format!(
            "services:\n  a:\n    image: x\n    healthcheck:\n      test: {t}\n"
        ));
        assert_eq!(e.line, Some(5), "{t}");
        assert!(e.message.contains(want), "{t}: {e}");
    }
    let e = error(
        "services:\n  a:\n    image: x\n    healthcheck:\n      test: [\"CMD\", \"x\"]\n      disable: true\n",
    );
    assert_eq!(e.line, Some(6));
    assert!(e.message.contains("both 'test' and 'disable: true'"), "{e}");
    let e = error("services:\n  a:\n    image: x\n    healthcheck:\n      interval: 10\n");
    assert!(e.message.contains("invalid duration '10'"), "{e}");
    let e = error("services:\n  a:\n    image: x\n    healthcheck:\n      start_interval: 1s\n");
    assert_eq!(
        e.message,
        "unsupported key 'start_interval' in the healthcheck of service 'a' \
         (supported: test, interval, timeout, retries, start_period, disable)"
    );
}

#[test]
fn empty_services_and_null_values_are_fine() {
    let c = parse("services: {}\n");
    assert!(c.services.is_empty());
    let c = parse("services:\nvolumes:\nnetworks:\n");
    assert!(c.services.is_empty() && c.volumes.is_empty());
    let c = parse(
        "services:\n  a:\n    image: x\n    command:\n    command_x: 1\n"
            .replace("    command_x: 1\n", "")
            .as_str(),
    );
    assert_eq!(c.services["a"].command, None);
}

#[test]
fn unsupported_keys_name_the_key_the_service_the_line_and_the_supported_keys() {
    let e = error("services:\n  web:\n    image: nginx\n    deploy:\n      replicas: 2\n")
        .in_template("web-db");
    assert_eq!(
        e.to_string(),
        "template web-db: compose.yaml line 4: unsupported key 'deploy' in service 'web' \
         (supported: image, command, entrypoint, environment, env_file, ports, volumes, \
         depends_on, healthcheck, restart, networks, labels, working_dir, user)"
    );
    assert_eq!(e.key.as_deref(), Some("services.web.deploy"));
    let e = error("services:\n  web:\n    image: nginx\n    privileged: true\n");
    assert_eq!(e.line, Some(4));
    assert!(
        e.message
            .starts_with("unsupported key 'privileged' in service 'web' (supported: image,")
    );
    let e = error("services:\n  web:\n    build: .\n");
    assert_eq!(e.line, Some(3));
    assert!(
        e.message
            .starts_with("unsupported key 'build' in service 'web': build the image beforehand")
    );
    let e = error("services: {}\nsecrets:\n  a: {file: x}\n");
    assert_eq!(e.key.as_deref(), Some("secrets"));
    assert_eq!(
        e.to_string(),
        "compose.yaml line 2: unsupported key 'secrets' at the top level \
         (supported: services, volumes, networks, name, version)"
    );
    let e = error(
        "services:\n  a:\n    image: x\n    ports:\n      - target: 80\n        mode: host\n",
    );
    assert_eq!(e.line, Some(6));
    assert!(e.message.starts_with(
        "unsupported key 'mode' in a port (supported: target, published, protocol, host_ip)"
    ));
    let e = error("services: {}\nvolumes:\n  data:\n    driver: local\n");
    assert_eq!(
        e.message,
        "unsupported key 'driver' in volume 'data' (supported: labels)"
    );
    let e = error("services: {}\nnetworks:\n  back:\n    driver: bridge\n");
    assert_eq!(
        e.message,
        "unsupported key 'driver' in network 'back' (supported: )"
    );
}

#[test]
fn yaml_syntax_errors_carry_the_line() {
    let e = error("services:\n  web:\n    image: nginx\n   ports: [\n");
    assert_eq!(e.file, "compose.yaml");
    assert!(e.line.is_some_and(|l| l >= 4), "{e}");
    assert!(e.message.starts_with("invalid YAML: "), "{e}");
    let e = error("services:\n  web:\n    image: a\n    image: b\n");
    assert_eq!(e.line, Some(4));
    assert!(e.message.contains("duplicated key"), "{e}");
    let e = error("services: {}\n---\nservices: {}\n");
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("several YAML documents"), "{e}");
    assert!(error("").message.contains("the file is empty"));
    assert!(
        error("- a\n- b\n")
            .message
            .contains("must be a mapping with 'services:'")
    );
    assert_eq!(
        error("name: x\n").message,
        "missing 'services': a compose file lists its containers under services:"
    );
}

#[test]
fn missing_image_and_wrong_shapes() {
    let e = error("services:\n  web:\n    command: x\n");
    assert_eq!(
        e.to_string(),
        "compose.yaml line 2: service 'web' has no image: add image: <name>:<tag>"
    );
    assert_eq!(e.key.as_deref(), Some("services.web.image"));
    let e = error("services:\n  web:\n    image: x\n    ports: 8080\n");
    assert_eq!(e.line, Some(4));
    assert_eq!(e.message, "'services.web.ports' must be a list, not '8080'");
    let e = error("services:\n  web:\n    image: [a]\n");
    assert_eq!(
        e.message,
        "'services.web.image' must be a string, not a list"
    );
    let e = error("services:\n  web:\n    image: x\n    environment:\n      - DEBUG\n");
    assert_eq!(e.line, Some(5));
    assert!(
        e.message
            .starts_with("'DEBUG' in 'services.web.environment' has no value: write DEBUG=value"),
        "{e}"
    );
    let e = error("services:\n  web:\n    image: x\n    restart: sometimes\n");
    assert!(
        e.message
            .starts_with("restart 'sometimes' is not supported (supported: no, always")
    );
    let e = error("services:\n  web:\n    image: x\n    working_dir: srv\n");
    assert!(e.message.contains("must be an absolute path"));
    let e = error("services:\n  web:\n    image: x\n    command: echo 'unterminated\n");
    assert_eq!(
        e.message,
        "'services.web.command': a single quote is not closed"
    );
    let e = error("services:\n  web site:\n    image: x\n");
    assert!(e.message.starts_with("invalid service name 'web site'"));
    let e = error("services:\n  web:\n    image: x\n    ports: !reset []\n");
    assert!(e.message.contains("YAML tags are not supported"), "{e}");
}

#[test]
fn port_forms_and_errors() {
    for (bad, want) in [
        (
            "8000-8010:8000-8010",
            "port ranges are not supported: list each port",
        ),
        (
            "80/sctp",
            "protocol 'sctp' is not supported (supported: tcp, udp)",
        ),
        ("0", "'0' is not a port (1 to 65535)"),
        ("70000", "'70000' is not a port"),
        ("x:80", "'x' is not a port"),
        ("1.2.3:80:80", "'1.2.3' is not an IP address"),
        ("::1:80:80", "too many ':'"),
    ] {
        let e = error(&format!(
            "services:\n  a:\n    image: x\n    ports:\n      - \"{bad}\"\n"
        ));
        assert_eq!(e.line, Some(5), "{bad}");
        let want = format!("port '{bad}': {want}");
        assert!(e.message.starts_with(&want), "{e}");
    }
    let e = error("services:\n  a:\n    image: x\n    ports:\n      - published: 80\n");
    assert!(e.message.contains("a port needs 'target'"));
    let e = error(
        "services:\n  a:\n    image: x\n    ports: [\"8080:80\"]\n  b:\n    image: y\n    ports:\n      - 8080:81\n",
    );
    assert_eq!(e.line, Some(8));
    assert_eq!(
        e.message,
        "host port 8080/tcp is published by service 'a' already: choose another host port"
    );
    // The same number on another protocol or another address is fine.
    parse("services:\n  a:\n    image: x\n    ports: [\"8080:80\", \"8080:80/udp\"]\n");
    parse(
        "services:\n  a:\n    image: x\n    ports: [\"127.0.0.1:8080:80\", \"127.0.0.2:8080:80\"]\n",
    );
}

#[test]
fn volume_forms_and_errors() {
    for (bad, want) in [
        (
            "cache:/x",
            "volume 'cache' is not declared: add it under the top-level 'volumes:'",
        ),
        (
            "data:relative",
            "volume target 'relative' must be an absolute path",
        ),
        (
            "data:/x:z",
            "option 'z' is not supported (supported: ro, rw)",
        ),
        ("a:b:c:d", "write source:target[:ro]"),
        ("~/x:/x", "'~' is not supported"),
        ("../outside:/x", "the path escapes the template folder"),
    ] {
        let e = error(&format!(
            "services:\n  a:\n    image: x\n    volumes:\n      - \"{bad}\"\nvolumes:\n  data:\n"
        ));
        assert_eq!(e.line, Some(5), "{bad}");
        assert!(e.message.contains(want), "{bad}: {e}");
    }
    for (long, want) in [
        (
            "{type: tmpfs, target: /t}",
            "volume type 'tmpfs' is not supported (supported: volume, bind)",
        ),
        ("{type: bind, target: /t}", "a bind mount needs 'source'"),
        ("{source: data, target: /t}", "needs 'type'"),
        ("{type: volume, source: data}", "needs 'target'"),
        (
            "{type: volume, source: other, target: /t}",
            "volume 'other' is not declared",
        ),
        (
            "{type: volume, target: /t, volume: {nocopy: true}}",
            "unsupported key 'volume' in a volume",
        ),
    ] {
        let e = error(&format!(
            "services:\n  a:\n    image: x\n    volumes:\n      - {long}\nvolumes:\n  data:\n"
        ));
        assert!(e.message.contains(want), "{long}: {e}");
    }
}

#[test]
fn template_files_are_resolved_and_must_exist() {
    let yaml = "services:\n  a:\n    image: x\n    env_file: [app.env, ./conf/db.env]\n    \
                volumes:\n      - ./conf:/etc/app:ro\n      - ./conf/nginx.conf:/etc/nginx.conf\n      \
                - .:/template\n      - type: bind\n        source: ./app.env\n        target: /x\n";
    let c = with_files(
        yaml,
        "compose.yaml",
        &["app.env", "conf/db.env", "conf/nginx.conf"],
    )
    .unwrap();
    let a = &c.services["a"];
    assert_eq!(a.env_file, strings(&["app.env", "conf/db.env"]));
    assert_eq!(a.volumes[0].source, MountSource::Template("conf".into()));
    assert!(a.volumes[0].read_only);
    assert_eq!(
        a.volumes[1].source,
        MountSource::Template("conf/nginx.conf".into())
    );
    assert_eq!(a.volumes[2].source, MountSource::Template("".into()));
    assert_eq!(a.volumes[3].source, MountSource::Template("app.env".into()));

    let e = with_files(yaml, "compose.yaml", &["conf/db.env", "conf/nginx.conf"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "compose.yaml line 4: env_file 'app.env' is not in the template: add the file 'app.env' \
         to the template folder"
    );
    let e = with_files(yaml, "compose.yaml", &["app.env", "conf/db.env"]).unwrap_err();
    assert_eq!(e.line, Some(7));
    assert!(
        e.message
            .starts_with("bind source './conf/nginx.conf' is not in the template")
    );

    // Relative to the compose file's folder; the template's root is the limit.
    let yaml = "services:\n  a:\n    image: x\n    env_file: ../common.env\n";
    let c = with_files(yaml, "deploy/compose.yaml", &["common.env"]).unwrap();
    assert_eq!(c.services["a"].env_file, strings(&["common.env"]));
    let e = with_files(yaml, "compose.yaml", &["common.env"]).unwrap_err();
    assert!(
        e.message
            .contains("escapes the template folder: keep it inside the template"),
        "{e}"
    );
    let e = with_files(
        "services:\n  a:\n    image: x\n    env_file: /etc/passwd\n",
        "compose.yaml",
        &[],
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("an absolute path is outside the template folder"),
        "{e}"
    );
}

#[test]
fn dependencies_must_exist_and_not_cycle() {
    let e = error("services:\n  web:\n    image: x\n    depends_on: [db]\n");
    assert_eq!(
        e.to_string(),
        "compose.yaml line 4: service 'web' depends on 'db', which is not a service of this file (services: web)"
    );
    let e = error(
        "services:\n  web:\n    image: x\n    depends_on: [api]\n  api:\n    image: x\n    depends_on:\n      db: {condition: service_started}\n  db:\n    image: x\n    depends_on: [web]\n",
    );
    assert_eq!(
        e.to_string(),
        "compose.yaml line 11: depends_on forms a cycle: web -> api -> db -> web: remove one of these dependencies"
    );
    assert_eq!(e.key.as_deref(), Some("services.db.depends_on"));
    let e = error("services:\n  a:\n    image: x\n    depends_on: [a]\n");
    assert!(e.message.contains("cycle: a -> a"), "{e}");
    let e = error(
        "services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: service_ready}\n  b:\n    image: x\n",
    );
    assert_eq!(e.line, Some(5));
    assert!(
        e.message
            .starts_with("condition 'service_ready' is not supported")
    );
    let e = error(
        "services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: service_healthy}\n  b:\n    image: x\n    healthcheck: {disable: true}\n",
    );
    assert!(
        e.message.contains("the healthcheck of 'b' is disabled"),
        "{e}"
    );
    let e = error(
        "services:\n  a:\n    image: x\n    depends_on:\n      b: {restart: true}\n  b:\n    image: x\n",
    );
    assert!(
        e.message
            .starts_with("unsupported key 'restart' in depends_on 'b' (supported: condition)")
    );
}

#[test]
fn networks_must_be_declared() {
    let e = error("services:\n  a:\n    image: x\n    networks: [front]\n");
    assert_eq!(e.line, Some(4));
    assert_eq!(
        e.message,
        "network 'front' is not declared: add it under the top-level 'networks:'"
    );
    let e = error(
        "services:\n  a:\n    image: x\n    networks:\n      back:\n        aliases: [db]\nnetworks:\n  back:\n",
    );
    assert_eq!(e.line, Some(6));
    assert!(
        e.message
            .starts_with("unsupported key 'aliases' in network 'back' of service 'a'")
    );
}

#[test]
fn values_are_interpolated_keys_are_not() {
    let vars: BTreeMap<String, String> = [("TAG", "16"), ("PORT", "5433"), ("PW", "a: b 'c'")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    let c = Compose::interpolated(
        "services:\n  db:\n    image: postgres:${TAG}\n    ports: [\"${PORT}:5432\"]\n    \
         environment:\n      POSTGRES_PASSWORD: $PW\n      LITERAL: $$HOME\n      ${KEY}: x\n",
        "compose.yaml",
        &vars,
    )
    .unwrap();
    let db = &c.services["db"];
    assert_eq!(db.image, "postgres:16");
    assert_eq!(db.ports[0].published, Some(5433));
    // A value cannot change the file's structure.
    assert_eq!(db.environment["POSTGRES_PASSWORD"], "a: b 'c'");
    assert_eq!(db.environment["LITERAL"], "$HOME");
    assert_eq!(db.environment["${KEY}"], "x");

    let e = Compose::parse("services:\n  db:\n    image: x\n    environment:\n      A: |\n        one\n        ${SECRET}\n", "compose.yaml").unwrap_err();
    assert_eq!(e.file, "compose.yaml");
    assert_eq!(e.key.as_deref(), Some("SECRET"));
    assert!(e.message.starts_with("variable 'SECRET' is not set"), "{e}");
    assert!(e.line.is_some_and(|l| l >= 5), "{e}");
}

#[test]
fn shell_words() {
    use super::service::split_words;
    assert_eq!(
        split_words("httpd -f -p 8080").unwrap(),
        strings(&["httpd", "-f", "-p", "8080"])
    );
    assert_eq!(
        split_words(r#"sh -c "echo \"hi\" \$HOME""#).unwrap(),
        strings(&["sh", "-c", "echo \"hi\" $HOME"])
    );
    assert_eq!(
        split_words(r"a\ b 'c d' e''f").unwrap(),
        strings(&["a b", "c d", "ef"])
    );
    assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
    assert_eq!(split_words("''").unwrap(), strings(&[""]));
    assert!(split_words("\"open").is_err());
    assert!(split_words("end\\").is_err());
}

#[test]
fn images_are_qualified_with_the_registry() {
    let reg = "registry.lan:5000";
    for (image, want) in [
        ("postgres:16", "registry.lan:5000/library/postgres:16"),
        ("postgres", "registry.lan:5000/library/postgres"),
        ("team/app:1", "registry.lan:5000/team/app:1"),
        (
            "metrom-test/busybox:1",
            "registry.lan:5000/metrom-test/busybox:1",
        ),
        ("ghcr.io/org/app:2", "ghcr.io/org/app:2"),
        ("localhost/app", "localhost/app"),
        ("localhost:5000/app", "localhost:5000/app"),
        ("docker.io/library/redis:7", "docker.io/library/redis:7"),
        (
            "redis@sha256:abc",
            "registry.lan:5000/library/redis@sha256:abc",
        ),
    ] {
        assert_eq!(qualify_image(image, reg), want, "{image}");
    }
    assert_eq!(qualify_image("redis", "reg.lan/"), "reg.lan/library/redis");
    let mut c = parse("services:\n  a:\n    image: redis:7\n  b:\n    image: ghcr.io/x/y\n");
    c.qualify_images(reg);
    assert_eq!(
        c.images(),
        ["registry.lan:5000/library/redis:7", "ghcr.io/x/y"]
    );
}
