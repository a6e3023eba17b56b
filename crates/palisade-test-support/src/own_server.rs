//! Servers a fault test starts for itself, on a port of its own, so that it
//! can crash, restart or freeze them without touching the shared ones.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{services_required, skipped, unique_name};

/// A PostgreSQL server of the test's own: a fresh cluster in a temporary
/// folder, on a free loopback port, trust authentication, user `postgres`.
/// Stopped and removed when dropped.
#[derive(Debug)]
pub struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Running as root: the server must run as the `postgres` user.
    as_postgres: bool,
}

impl OwnPostgres {
    /// Starts one, or returns `None` (and says the test is skipped) when the
    /// PostgreSQL server binaries are not installed; under
    /// `PALISADE_REQUIRE_SERVICES=1` that fails the test instead.
    ///
    /// # Panics
    /// When the binaries are missing under `PALISADE_REQUIRE_SERVICES=1`, or
    /// `initdb` or `pg_ctl` fails (the test cannot go on without its server).
    pub fn start(test: &str) -> Option<Self> {
        let Some(bin) = postgres_bin() else {
            let why =
                "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin";
            assert!(!services_required(), "{test}: {why}");
            skipped(test, why);
            return None;
        };
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(unique_name("palisade_pg"));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&dir));
        }
        let server = Self {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        server.pg(
            &["initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-D"],
            true,
        );
        server.ctl(&["start"]);
        Some(server)
    }

    /// As [`start`](Self::start), with TLS on, from certificates made for the
    /// test ([`TestCerts`]): the server accepts TLS and plain connections;
    /// the certificates are returned for the client to trust.
    ///
    /// # Panics
    /// As [`start`](Self::start), and when the certificates cannot be made.
    pub fn start_tls(test: &str) -> Option<(Self, TestCerts)> {
        let server = Self::start(test)?;
        let certs = TestCerts::make(&server.dir);
        if server.as_postgres {
            run(Command::new("chown")
                .arg("postgres:")
                .arg(&certs.cert)
                .arg(&certs.key));
        }
        run(Command::new("chmod").arg("600").arg(&certs.key));
        let conf = format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            certs.cert.display(),
            certs.key.display()
        );
        let auto = server.data().join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&conf);
        std::fs::write(&auto, text).expect("write postgresql.auto.conf");
        server.ctl(&["restart"]);
        Some((server, certs))
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Kills the server the way a crash does (`pg_ctl stop -m immediate`:
    /// no checkpoint, every connection cut) and starts it again; returns when
    /// it accepts connections.
    ///
    /// # Panics
    /// When `pg_ctl` fails.
    pub fn crash_and_restart(&self) {
        self.ctl(&["stop", "-m", "immediate"]);
        self.ctl(&["start"]);
    }

    fn ctl(&self, args: &[&str]) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        let mut all = vec!["pg_ctl", "-w", "-D"];
        let data = self.data().display().to_string();
        all.push(&data);
        all.extend(["-o", &options, "-l"]);
        let log = log.display().to_string();
        all.push(&log);
        all.extend(args);
        self.pg(&all, false);
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs a PostgreSQL binary (first of `args`), as `postgres` when root;
    /// `data_last` appends the data folder.
    fn pg(&self, args: &[&str], data_last: bool) {
        let program = self.bin.join(args[0]);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(&args[1..]);
        if data_last {
            cmd.arg(self.data());
        }
        run(&mut cmd);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            self.ctl(&["stop", "-m", "immediate"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A loopback port nobody listens on now.
///
/// # Panics
/// When no port can be bound on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A Redis server of the test's own, on a free loopback port, with no
/// persistence. Can be frozen (`SIGSTOP`: its connections stay open but
/// nothing answers) and thawed. Killed when dropped.
#[derive(Debug)]
pub struct OwnRedis {
    child: std::process::Child,
    port: u16,
    tls: bool,
}

impl OwnRedis {
    /// Starts one, or returns `None` (and says the test is skipped) when
    /// `redis-server` is not installed; under `PALISADE_REQUIRE_SERVICES=1`
    /// that fails the test instead.
    ///
    /// # Panics
    /// When the binary is missing under `PALISADE_REQUIRE_SERVICES=1`, or the
    /// server does not accept connections within 10 s.
    pub fn start(test: &str) -> Option<Self> {
        Self::spawn(test, &[])
    }

    /// As [`start`](Self::start), listening with TLS only, from
    /// certificates made for the test in `dir` ([`TestCerts`], returned
    /// for the client to trust). [`url`](Self::url) is then `rediss://`.
    ///
    /// # Panics
    /// As [`start`](Self::start), and when the certificates cannot be made.
    pub fn start_tls(test: &str, dir: &std::path::Path) -> Option<(Self, TestCerts)> {
        let certs = TestCerts::make(dir);
        let (cert, key, ca) = (
            certs.cert.display().to_string(),
            certs.key.display().to_string(),
            certs.ca.display().to_string(),
        );
        let server = Self::spawn(
            test,
            &[
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "no",
            ],
        )?;
        Some((server, certs))
    }

    fn spawn(test: &str, tls: &[&str]) -> Option<Self> {
        let port = free_port();
        let tls_on = !tls.is_empty();
        let mut cmd = Command::new("redis-server");
        if tls_on {
            cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                .args(tls);
        } else {
            cmd.args(["--port", &port.to_string()]);
        }
        // Its working folder is the system's temporary one: nothing it might
        // write (a dump) lands in the repository.
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                let why = format!("cannot start redis-server: {e}");
                assert!(!services_required(), "{test}: {why}");
                skipped(test, &why);
                return None;
            }
        };
        let server = Self {
            child,
            port,
            tls: tls_on,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{test}: redis-server on port {port} did not start");
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://localhost:PORT` with TLS.
    pub fn url(&self) -> String {
        if self.tls {
            format!("rediss://localhost:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    /// Stops the process (`SIGSTOP`): connections stay open, nothing answers.
    ///
    /// # Panics
    /// When `kill` fails.
    pub fn freeze(&self) {
        run(Command::new("kill").args(["-STOP", &self.child.id().to_string()]));
    }

    /// Lets a frozen server go on (`SIGCONT`).
    ///
    /// # Panics
    /// When `kill` fails.
    pub fn thaw(&self) {
        run(Command::new("kill").args(["-CONT", &self.child.id().to_string()]));
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A certificate authority and a server certificate for `localhost` (and
/// 127.0.0.1), made with the `openssl` command in `dir`: what a TLS test
/// gives its own server and trusts on the client side.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The authority's certificate (PEM): the one root a client trusts.
    pub ca: PathBuf,
    /// The server's certificate (PEM), signed by the authority.
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

impl TestCerts {
    /// Makes them in `dir`.
    ///
    /// # Panics
    /// When `openssl` is missing or fails.
    pub fn make(dir: &std::path::Path) -> Self {
        let p = |name: &str| dir.join(name);
        let s = |path: PathBuf| path.display().to_string();
        run(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=palisade test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &s(p("ca.key")),
            "-out",
            &s(p("ca.pem")),
        ]));
        run(Command::new("openssl").args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &s(p("server.key")),
            "-out",
            &s(p("server.csr")),
        ]));
        std::fs::write(
            p("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the extensions file");
        run(Command::new("openssl").args([
            "x509",
            "-req",
            "-in",
            &s(p("server.csr")),
            "-CA",
            &s(p("ca.pem")),
            "-CAkey",
            &s(p("ca.key")),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &s(p("server.ext")),
            "-out",
            &s(p("server.pem")),
        ]));
        Self {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
        }
    }
}
