//! Test support: a private PostgreSQL server for tests, started from the machine's own
//! binaries (Debian's `/usr/lib/postgresql/*/bin`, or `initdb` on `PATH`) in a temporary
//! folder, on a free loopback port, tuned for speed rather than durability (`fsync=off`).
//!
//! Without PostgreSQL installed, [`TestPostgres::start`] and [`TestPostgres::shared`] return
//! `None` and say once on stderr that the tests skip; with `RUNWAY_REQUIRE_POSTGRES` set (CI),
//! they panic instead, so no test silently disappears. This crate depends on no database
//! driver: databases are created with the server's own `createdb`.

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable that turns "PostgreSQL is missing" from a skip into a failure.
pub const REQUIRE_VARIABLE: &str = "RUNWAY_REQUIRE_POSTGRES";

/// The line printed when tests skip for want of PostgreSQL.
pub const SKIP_LINE: &str =
    "skipped: PostgreSQL is not installed (set RUNWAY_REQUIRE_POSTGRES=1 to make this a failure)";

/// The system user the server runs as when the tests run as root (PostgreSQL refuses root).
const SERVER_USER: &str = "postgres";

/// How long `pg_ctl` may wait for the server to start or stop, in seconds.
const PG_CTL_WAIT_SECONDS: &str = "60";

/// A running private PostgreSQL server; dropping it stops the server and deletes its folder.
pub struct TestPostgres {
    bin: PathBuf,
    folder: Option<tempfile::TempDir>,
    port: u16,
    as_server_user: bool,
    running: bool,
    watchdog: Option<Child>,
}

/// How many databases this process has created, so each name is new.
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// The one server of this test process, for [`TestPostgres::shared`].
static SHARED: OnceLock<Option<TestPostgres>> = OnceLock::new();

impl TestPostgres {
    /// Starts a new server, or `None` (after printing [`SKIP_LINE`]) when PostgreSQL is not
    /// installed and [`REQUIRE_VARIABLE`] is unset.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is missing and [`REQUIRE_VARIABLE`] is set, or when it is installed
    /// but fails to start.
    pub fn start() -> Option<TestPostgres> {
        let Some(bin) = find_binaries() else {
            if std::env::var_os(REQUIRE_VARIABLE).is_some() {
                panic!(
                    "{REQUIRE_VARIABLE} is set but PostgreSQL is not installed: no initdb and \
                     pg_ctl under /usr/lib/postgresql/*/bin or on PATH (apt-get install postgresql)"
                );
            }
            // Written to the process's stderr directly: the test harness captures
            // `eprintln!` of passing tests, and a skip must be seen.
            _ = writeln!(std::io::stderr(), "{SKIP_LINE}");
            return None;
        };
        match TestPostgres::init(bin) {
            Ok(server) => Some(server),
            Err(why) => panic!("PostgreSQL is installed but the test server did not start: {why}"),
        }
    }

    /// The server shared by every test of this process (each test takes its own database
    /// with [`TestPostgres::create_database`]); `None` as for [`TestPostgres::start`].
    ///
    /// A `static` is never dropped, so the server is stopped at process exit by a hook
    /// registered with `atexit`, and by a watchdog process should the tests be killed.
    pub fn shared() -> Option<&'static TestPostgres> {
        SHARED
            .get_or_init(|| {
                let server = TestPostgres::start()?;
                // SAFETY: `stop_shared_server` is an `extern "C" fn()` that never unwinds
                // (it catches panics) and only touches the `SHARED` static, which outlives it.
                unsafe {
                    libc::atexit(stop_shared_server);
                }
                Some(server)
            })
            .as_ref()
    }

    /// The URL of `database` on this server (user `postgres`, no password: trust).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SERVER_USER}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Creates a new, empty database with a name no other test uses, and returns its URL.
    ///
    /// # Panics
    ///
    /// When the server refuses (the test cannot go on without a database).
    pub fn create_database(&self) -> String {
        let name = format!(
            "runway_test_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let port = self.port.to_string();
        let socket = self.socket_dir();
        let output = self
            .command("createdb")
            .args(["-h", path_text(&socket), "-p", &port, "-U", SERVER_USER])
            .arg(&name)
            .output()
            .expect("createdb runs");
        assert!(
            output.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.url(&name)
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server, cutting every client's connection as an outage would; its data and
    /// port stay, for [`TestPostgres::restart`]. Does nothing if it is stopped.
    pub fn stop(&mut self) {
        // `fast`, not `immediate`: with `synchronous_commit=off` an immediate stop can lose
        // the last commits, and a test that restarts the server expects its data back.
        self.stop_with("fast");
    }

    fn stop_with(&mut self, mode: &str) {
        if self.running {
            // A failure here is reported by the next start, which would find it running.
            _ = self.pg_ctl(&["stop", "-m", mode]);
            self.running = false;
        }
    }

    /// Stops the server and starts it again on the same port with the same data (for tests
    /// of what clients do while the database goes away and comes back).
    ///
    /// # Panics
    ///
    /// When the server does not start again.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.run_server() {
            panic!("the test PostgreSQL server did not start again: {why}");
        }
    }

    fn init(bin: PathBuf) -> Result<TestPostgres, String> {
        let as_server_user = is_root();
        let folder = tempfile::Builder::new()
            .prefix("runway-postgres-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary folder: {e}"))?;
        if as_server_user {
            hand_to_server_user(folder.path())?;
        }
        let port = free_port()?;
        let mut server = TestPostgres {
            bin,
            folder: Some(folder),
            port,
            as_server_user,
            running: false,
            watchdog: None,
        };
        let data = server.data_dir();
        let output = server
            .command("initdb")
            .args(["-D", path_text(&data)])
            .args(["-U", SERVER_USER, "--auth=trust", "--encoding=UTF8"])
            .args(["--no-locale", "--no-sync"])
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let settings = format!(
            "\n# runway-test-postgres: a throwaway server, fast rather than durable.\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 200\n",
            path_text(&server.socket_dir())
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut conf| conf.write_all(settings.as_bytes()))
            .map_err(|e| format!("cannot configure the server: {e}"))?;
        server.run_server()?;
        server.watchdog = server.spawn_watchdog().ok();
        Ok(server)
    }

    fn run_server(&mut self) -> Result<(), String> {
        let log = self.socket_dir().join("server.log");
        let output = self
            .pg_ctl(&["start", "-l", path_text(&log)])
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !output.status.success() {
            let server_log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed: {}{}\n{server_log}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        self.running = true;
        Ok(())
    }

    /// A process that outlives a killed test process just long enough to stop its server:
    /// it polls for the test process and stops the server once it is gone. In its own
    /// process group, so the Ctrl-C that stops the tests does not stop it too.
    fn spawn_watchdog(&self) -> std::io::Result<Child> {
        use std::os::unix::process::CommandExt as _;
        let stop = self.command_line("pg_ctl", &self.pg_ctl_args(&["stop", "-m", "immediate"]));
        let folder = self.socket_dir();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             if [ -d {folder}/data ]; then {stop} >/dev/null 2>&1; rm -rf {folder}; fi",
            pid = std::process::id(),
            folder = shell_quote(path_text(&folder)),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
    }

    fn socket_dir(&self) -> PathBuf {
        self.folder
            .as_ref()
            .map(|f| f.path().to_path_buf())
            .unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.socket_dir().join("data")
    }

    fn pg_ctl_args(&self, action: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-D".into(),
            path_text(&self.data_dir()).into(),
            "-w".into(),
            "-t".into(),
            PG_CTL_WAIT_SECONDS.into(),
        ];
        args.extend(action.iter().map(|a| (*a).to_owned()));
        args
    }

    fn pg_ctl(&self, action: &[&str]) -> std::io::Result<std::process::Output> {
        self.command("pg_ctl")
            .args(self.pg_ctl_args(action))
            .stdin(Stdio::null())
            .output()
    }

    /// A command running one of the server's binaries, as the server's user when root.
    fn command(&self, program: &str) -> Command {
        let binary = self.bin.join(program);
        if self.as_server_user {
            let mut command = Command::new("runuser");
            command.args(["-u", SERVER_USER, "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        }
    }

    /// The same as [`TestPostgres::command`], as one line of shell.
    fn command_line(&self, program: &str, args: &[String]) -> String {
        let binary = self.bin.join(program);
        let mut words: Vec<String> = Vec::new();
        if self.as_server_user {
            words.extend(["runuser", "-u", SERVER_USER, "--"].map(str::to_owned));
        }
        words.push(path_text(&binary).to_owned());
        words.extend(args.iter().cloned());
        words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn shut_down(&mut self) {
        // The data is thrown away next: no need to write it out first.
        self.stop_with("immediate");
        if let Some(mut watchdog) = self.watchdog.take() {
            _ = watchdog.kill();
            _ = watchdog.wait();
        }
        if let Some(folder) = self.folder.take() {
            _ = folder.close();
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Stops the shared server as the test process exits (registered with `atexit`).
extern "C" fn stop_shared_server() {
    // Unwinding out of an `extern "C"` function aborts: keep any panic in here.
    _ = std::panic::catch_unwind(|| {
        if let Some(Some(server)) = SHARED.get() {
            // The static cannot be borrowed mutably; stopping needs only its paths.
            let stop = server.pg_ctl(&["stop", "-m", "immediate"]);
            drop(stop);
            if let Some(folder) = &server.folder {
                _ = std::fs::remove_dir_all(folder.path());
            }
        }
    });
}

/// The folder holding `initdb` and `pg_ctl`: the newest Debian install, else `PATH`.
fn find_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|dir| has_both(dir))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Gives the temporary folder to the server's user, and makes sure that user can reach it.
fn hand_to_server_user(folder: &Path) -> Result<(), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let output = Command::new("id")
            .args([flag, SERVER_USER])
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("there is no `{SERVER_USER}` system user to run the server as"))
    };
    let (uid, gid) = (id("-u")?, id("-g")?);
    std::os::unix::fs::chown(folder, Some(uid), Some(gid))
        .map_err(|e| format!("cannot give {} to {SERVER_USER}: {e}", folder.display()))?;
    // The temporary folder's parent (normally /tmp) must let the server's user through.
    if let Some(parent) = folder.parent() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(parent)
            .map_err(|e| format!("cannot read {}: {e}", parent.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o001))
                .map_err(|e| format!("cannot open {} to others: {e}", parent.display()))?;
        }
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    // The port is free once the listener closes; another process could take it before the
    // server binds, in which case the server fails to start and says so.
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn path_text(path: &Path) -> &str {
    path.to_str()
        .expect("temporary folders have UTF-8 paths on the test machines")
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_creates_databases_and_stops_with_its_folder() {
        let Some(mut server) = TestPostgres::start() else {
            return;
        };
        let folder = server.socket_dir();
        let first = server.create_database();
        let second = server.create_database();
        assert_ne!(first, second);
        assert!(first.contains(&format!("127.0.0.1:{}", server.port())));
        server.restart();
        server.create_database();
        drop(server);
        assert!(!folder.exists(), "{} is left behind", folder.display());
    }

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
