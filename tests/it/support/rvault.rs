//! RustyVault (`rvault`, crates.io `rusty_vault`): a real Vault-API server, KV v1 only. Started on
//! a free loopback port, initialised and unsealed over its HTTP API with one key share.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) struct RustyVault {
    child: Child,
    pub address: String,
    pub root_token: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RustyVault {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let address = format!("http://127.0.0.1:{port}");
        let config = dir.path().join("config.hcl");
        std::fs::write(
            &config,
            format!(
                "storage \"file\" {{\n  path = \"{}\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n}}\napi_addr = \"{address}\"\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("rvault")
            .arg("server")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "RustyVault is not installed: run `cargo install rusty_vault --locked` \
                 (tests/run.sh does this) so `rvault` is on PATH",
            );
        let http = reqwest::Client::new();
        let mut init = None;
        for _ in 0..100 {
            if let Ok(r) = http
                .put(format!("{address}/v1/sys/init"))
                .json(&serde_json::json!({"secret_shares": 1, "secret_threshold": 1}))
                .send()
                .await
            {
                init = Some(r.json::<serde_json::Value>().await.unwrap());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let init = init.expect("rvault did not come up");
        let key = init["keys"][0].as_str().unwrap();
        let unseal: serde_json::Value = http
            .put(format!("{address}/v1/sys/unseal"))
            .json(&serde_json::json!({ "key": key }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(unseal["sealed"], false, "{unseal}");
        Self {
            child,
            address,
            root_token: init["root_token"].as_str().unwrap().to_owned(),
            _dir: dir,
        }
    }

    /// The server's process id, for the benchmarks' CPU accounting.
    #[allow(
        dead_code,
        reason = "used by benches/handout.rs, which shares this harness"
    )]
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RustyVault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
