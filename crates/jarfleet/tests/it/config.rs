//! `config = "DIR"` next to the spec: templates rendered with the environment of whoever applies
//! the spec, per release, then per instance; a new rendering is a new release, and a rollback
//! brings the old config back with the old code.

use std::path::Path;
use std::time::Duration;

use crate::harness::{AppDef, Fleet, run_with_deadline};

fn run_with(fleet: &Fleet, args: &[&str], greeting: Option<&str>) -> std::process::Output {
    let mut cmd = fleet.command(args);
    match greeting {
        Some(g) => cmd.env("GREETING", g),
        None => cmd.env_remove("GREETING"),
    };
    run_with_deadline(&mut cmd, Duration::from_secs(180)).expect("jarfleet runs")
}

/// Each ready instance's `app.properties`, found through the JVM's `JARFLEET_CONFIG_DIR`.
fn configs(fleet: &Fleet) -> Vec<(u64, String)> {
    fleet
        .instances("fx")
        .iter()
        .filter(|i| i["ready"] == true)
        .filter_map(|i| {
            let pid = i["pid"].as_u64()?;
            // A JVM that is just gone (a rolling restart) has no environment to read.
            let env = crate::harness::environ(pid);
            if env.is_empty() {
                return None;
            }
            let dir = env
                .into_iter()
                .find_map(|(k, v)| (k == "JARFLEET_CONFIG_DIR").then_some(v))
                .unwrap_or_else(|| panic!("JVM {pid} has no JARFLEET_CONFIG_DIR"));
            let text = std::fs::read_to_string(Path::new(&dir).join("app.properties")).ok()?;
            Some((i["port"].as_u64()?, text))
        })
        .collect()
}

#[test]
fn spec_config_templates_render_per_instance_roll_as_releases_and_roll_back() {
    let fleet = Fleet::new(4);
    std::fs::create_dir_all(fleet.path("config")).expect("config dir");
    std::fs::write(
        fleet.path("config/app.properties"),
        "port=${PORT}\ngreeting=${GREETING:?set GREETING for the welcome page}\n",
    )
    .expect("template");
    fleet.write_app(&AppDef {
        instances: 2,
        extra: "config = \"config\"",
        tables: "[apps.fx.deploy]\nmin_healthy = \"0s\"\n",
        ..AppDef::default()
    });

    let out = run_with(&fleet, &["up", "-d", "--wait"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("app.properties:2:") && err.contains("set GREETING for the welcome page"),
        "{err}"
    );
    assert!(fleet.daemon_pid().is_none(), "nothing started");

    let out = run_with(&fleet, &["up", "-d", "--wait"], Some("hi"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fleet.wait_ready("fx", 2, Duration::from_secs(60));
    let all = configs(&fleet);
    assert_eq!(all.len(), 2, "{all:?}");
    for (port, text) in all {
        assert_eq!(text, format!("port={port}\ngreeting=hi\n"));
    }

    // A new value is a new release, rolled out like any other.
    let out = run_with(&fleet, &["apply"], Some("hey"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::harness::wait_until("the new config everywhere", Duration::from_secs(60), || {
        let c = configs(&fleet);
        (c.len() == 2
            && c.iter()
                .all(|(port, t)| *t == format!("port={port}\ngreeting=hey\n")))
        .then_some(())
    });
    crate::harness::wait_until("the deployment's end", Duration::from_secs(60), || {
        let s = fleet.status();
        s["apps"][0]["deployment"].is_null().then_some(())
    });

    fleet.ok(&["rollback", "fx", "--wait"]);
    fleet.wait_ready("fx", 2, Duration::from_secs(60));
    let all = configs(&fleet);
    assert_eq!(all.len(), 2, "{all:?}");
    for (port, text) in all {
        assert_eq!(text, format!("port={port}\ngreeting=hi\n"));
    }
}

#[test]
fn the_instance_config_dir_is_a_variable_of_args_env_and_templates() {
    let fleet = Fleet::new(2);
    std::fs::create_dir_all(fleet.path("config")).expect("config dir");
    std::fs::write(
        fleet.path("config/app.properties"),
        "self=${JARFLEET_CONFIG_DIR}/app.properties\nport=${PORT}\n",
    )
    .expect("template");
    fleet.write_app(&AppDef {
        // `/version` answers what `--version` got: the resolved directory.
        args: &["--version=${JARFLEET_CONFIG_DIR}"],
        extra: "config = \"config\"\nenv = { APP_CONFIG = \"${JARFLEET_CONFIG_DIR}/app.properties\" }",
        ..AppDef::default()
    });
    fleet.up();
    let ready = fleet.wait_ready("fx", 1, Duration::from_secs(60));
    let port = ready[0]["port"].as_u64().expect("a port") as u16;
    let pid = ready[0]["pid"].as_u64().expect("a pid");

    let (status, dir) = crate::harness::http_get(port, "/version").expect("GET /version");
    assert_eq!(status, 200);
    let env = crate::harness::environ(pid);
    let from_env = env
        .iter()
        .find_map(|(k, v)| (k == "JARFLEET_CONFIG_DIR").then_some(v.clone()))
        .expect("the JVM has JARFLEET_CONFIG_DIR");
    assert_eq!(
        dir, from_env,
        "the variable is the directory the JVM is told"
    );
    assert!(
        Path::new(&dir).ends_with("config/fx/0"),
        "the instance's own directory: {dir}"
    );
    let app_config = env
        .iter()
        .find_map(|(k, v)| (k == "APP_CONFIG").then_some(v.clone()))
        .expect("the JVM has APP_CONFIG");
    assert_eq!(app_config, format!("{dir}/app.properties"));

    // The fixture reads the file from that directory; the template named it too.
    let (status, text) =
        crate::harness::http_get(port, "/config?file=app.properties").expect("GET /config");
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, format!("self={dir}/app.properties\nport={port}\n"));
    assert_eq!(
        std::fs::read_to_string(&app_config).expect("the file APP_CONFIG names"),
        text
    );
}
