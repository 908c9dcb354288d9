//! A throwaway PostgreSQL cluster with a Supabase-like baseline and the
//! migrations in `supabase/migrations/` applied, for the bootstrap registry's
//! tests (DESIGN §8).
//!
//! One cluster per test process: `initdb` in a temp dir, `postgres` on a free
//! loopback port with `trust` auth, run under a shell whose stdin is a pipe
//! this process holds; when the process exits the pipe closes and the shell
//! stops postgres and removes the directory. As root (initdb refuses root)
//! the cluster runs as the `postgres` user.
//!
//! The binaries come from `INFERNET_PG_BINDIR`, else `pg_config --bindir`,
//! else the newest `/usr/lib/postgresql/*/bin`.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Supabase's roles (cluster-wide), as a real project has them: the API roles
/// are `nologin`, `service_role` bypasses RLS, PostgREST logs in as
/// `authenticator` and switches to one of them.
const SUPABASE_ROLES: &str = r#"
create role anon nologin noinherit;
create role authenticated nologin noinherit;
create role service_role nologin noinherit bypassrls;
create role authenticator login noinherit;
grant anon, authenticated, service_role to authenticator;
grant anon, authenticated, service_role to postgres;
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
"#;

/// Supabase's per-database baseline: the `extensions` schema and the default
/// grants of a real project, which give the API roles ALL on everything in
/// `public` (so a migration must revoke and rely on RLS, never on defaults).
const SUPABASE_DATABASE: &str = r#"
create schema if not exists extensions;
grant usage on schema extensions to anon, authenticated, service_role;
grant usage on schema public to anon, authenticated, service_role;
grant all on all tables in schema public to anon, authenticated, service_role;
grant all on all functions in schema public to anon, authenticated, service_role;
grant all on all sequences in schema public to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on sequences to anon, authenticated, service_role;
"#;

const TEMPLATE_DB: &str = "infernet_registry_template";

pub struct Cluster {
    port: u16,
    dir: PathBuf,
    // Held open for the life of the process: its end stops the cluster.
    _stdin: ChildStdin,
    _child: Child,
    fresh: Mutex<()>,
    next: AtomicUsize,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();

fn bindir() -> PathBuf {
    if let Ok(d) = std::env::var("INFERNET_PG_BINDIR") {
        return PathBuf::from(d);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if d.join("initdb").exists() {
                return d;
            }
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!(
            "PostgreSQL binaries not found: set INFERNET_PG_BINDIR, put pg_config on PATH, \
             or install postgresql (initdb, postgres) under /usr/lib/postgresql/<v>/bin"
        )
    })
}

fn is_root() -> bool {
    // No libc dependency: the effective uid from /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A command run as the cluster's owner: `postgres` when we are root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a loopback port")
        .port()
}

fn conn_string(port: u16, db: &str) -> String {
    format!("host=127.0.0.1 port={port} user=postgres dbname={db} connect_timeout=10")
}

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to the test cluster ({url}): {e}"))
}

/// The migrations, in name order.
pub fn migrations() -> Vec<PathBuf> {
    let dir = crate::repo_root().join("supabase/migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no migrations in {}", dir.display());
    files
}

/// The Supabase baseline and every migration, on one database.
fn migrate(url: &str) {
    let mut c = connect(url);
    c.batch_execute(SUPABASE_DATABASE)
        .unwrap_or_else(|e| panic!("applying the Supabase baseline: {e:?}"));
    for m in migrations() {
        let sql = std::fs::read_to_string(&m).unwrap();
        c.batch_execute(&sql)
            .unwrap_or_else(|e| panic!("applying migration {}: {e:?}", m.display()));
    }
}

impl Cluster {
    /// One cluster per test process, started on first use: initdb in a temp
    /// dir, a free loopback port, Supabase's roles and baseline grants, the
    /// migrations applied (to `postgres` and to the template of `fresh_db`).
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(Cluster::start)
    }

    fn start() -> Cluster {
        let bin = bindir();
        let dir = tempfile::Builder::new()
            .prefix("infernet-pg-")
            .tempdir()
            .expect("temp dir for the cluster")
            .keep();
        let data = dir.join("data");
        let log = dir.join("postgres.log");
        // initdb into `dir` (again after a failed start: the shell removes `dir`).
        let init = || {
            std::fs::create_dir_all(&dir).expect("creating the cluster's directory");
            if is_root() {
                let st = Command::new("chown")
                    .args(["-R", "postgres:"])
                    .arg(&dir)
                    .status()
                    .expect("running chown");
                assert!(
                    st.success(),
                    "chown of {} to postgres failed",
                    dir.display()
                );
            }
            let out = as_owner(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .output()
                .expect("running initdb");
            assert!(
                out.status.success(),
                "initdb ({}) failed: {}{}",
                bin.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };

        let mut last_err = String::new();
        for _attempt in 0..3 {
            init();
            let port = free_port();
            // The shell stops postgres (fast shutdown) and removes the
            // directory once its stdin, our pipe, reaches end of file. It
            // repeats the signal (one sent before postgres installs its
            // handlers is lost: an asynchronous command starts with SIGINT
            // ignored) and kills after 5 s.
            let script = r#"
"$1/postgres" -D "$2/data" -k "$2" -p "$3" -c listen_addresses=127.0.0.1 \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off >"$2/postgres.log" 2>&1 &
pid=$!
read _ignored
i=0
while kill -0 $pid 2>/dev/null; do
  if [ $i -lt 50 ]; then kill -INT $pid 2>/dev/null; else kill -KILL $pid 2>/dev/null; fi
  i=$((i+1))
  sleep 0.1
done
wait $pid
rm -rf "$2"
"#;
            let mut child = as_owner(Path::new("/bin/sh"))
                .arg("-c")
                .arg(script)
                .arg("sh")
                .arg(&bin)
                .arg(&dir)
                .arg(port.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning postgres");
            let stdin = child.stdin.take().expect("piped stdin");
            let deadline = Instant::now() + Duration::from_secs(30);
            let ready = loop {
                match postgres::Client::connect(&conn_string(port, "postgres"), postgres::NoTls) {
                    Ok(_) => break true,
                    Err(e) => last_err = e.to_string(),
                }
                if matches!(child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                    break false;
                }
                // postgres may have exited (port taken) while the shell waits.
                if let Ok(mut f) = std::fs::File::open(&log) {
                    let mut s = String::new();
                    let _ = f.read_to_string(&mut s);
                    if s.contains("could not bind")
                        || s.contains("could not create any TCP/IP sockets")
                    {
                        break false;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            if !ready {
                let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                last_err = format!("{last_err}; postgres log:\n{log_text}");
                drop(stdin);
                let _ = child.wait();
                if log_text.contains("could not bind")
                    || log_text.contains("could not create any TCP/IP sockets")
                {
                    // Another process took the port: again, on another.
                    continue;
                }
                panic!(
                    "the test PostgreSQL cluster did not start ({}): {last_err}",
                    bin.display()
                );
            }

            let cluster = Cluster {
                port,
                dir: dir.clone(),
                _stdin: stdin,
                _child: child,
                fresh: Mutex::new(()),
                next: AtomicUsize::new(0),
            };
            let mut admin = connect(&cluster.admin_url());
            admin
                .batch_execute(SUPABASE_ROLES)
                .unwrap_or_else(|e| panic!("creating Supabase's roles: {e:?}"));
            admin
                .batch_execute(&format!("create database {TEMPLATE_DB}"))
                .expect("creating the template database");
            drop(admin);
            migrate(&cluster.admin_url());
            migrate(&cluster.url(TEMPLATE_DB));
            return cluster;
        }
        panic!(
            "the test PostgreSQL cluster did not start ({}): {last_err}",
            bin.display()
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data, socket, log); removed at process exit.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A superuser connection string for the `postgres` database (migrated).
    pub fn admin_url(&self) -> String {
        conn_string(self.port, "postgres")
    }

    /// A superuser connection string for database `db`.
    pub fn url(&self, db: &str) -> String {
        conn_string(self.port, db)
    }

    /// A fresh database with the migrations applied (a copy of the migrated
    /// template), so tests don't see each other's rows; returns its name.
    pub fn fresh_db(&self) -> String {
        let _guard = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        let name = format!("registry_test_{}", self.next.fetch_add(1, Ordering::SeqCst));
        let mut admin = connect(&self.admin_url());
        admin
            .batch_execute(&format!("create database {name} template {TEMPLATE_DB}"))
            .unwrap_or_else(|e| panic!("creating database {name}: {e:?}"));
        name
    }
}
