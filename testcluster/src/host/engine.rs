//! The Docker engine under the docker host (`docker.rs`): the `docker` CLI, a locally built
//! image, a private network.
//!
//! Nothing is pulled: the image `redquorum-redis:local` is built `FROM scratch` out of the
//! host's own `redis-server`, the shared libraries `ldd` lists for it and the clock shim,
//! so it works on machines without registry access. Each cluster gets its own bridge
//! network with a random `10.x.y.0/24` subnet, so containers keep a fixed IP across
//! restarts and network disconnects.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::server::{self, Spec};

/// The image the docker backend runs (and builds when missing or stale).
pub const IMAGE: &str = "redquorum-redis:local";
/// Label on every container and network the harness creates.
pub(crate) const LABEL: &str = "testcluster";
/// Where a master's host dir (data, log, clock file, shim) is mounted in its container.
pub(crate) const MOUNT: &str = "/tc";
/// The TLS port inside a container (published on the spec's TLS port).
pub(crate) const TLS_PORT: u16 = 6380;
const FINGERPRINT_LABEL: &str = "testcluster.fingerprint";

const DOCKERFILE: &str = "FROM scratch\n\
COPY rootfs/ /\n\
ENV PATH=/usr/bin\n\
WORKDIR /data\n\
EXPOSE 6379\n\
CMD [\"redis-server\", \"--bind\", \"0.0.0.0\", \"--protected-mode\", \"no\"]\n";

pub(crate) const CMD_TIMEOUT: Duration = Duration::from_secs(60);
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `docker args..`, returns trimmed stdout; kills it after `timeout`.
pub(crate) fn docker(args: &[&str], timeout: Duration) -> Result<String> {
    let command = args.iter().take(3).copied().collect::<Vec<_>>().join(" ");
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: "docker".into(),
            source,
        })?;
    // Drain both pipes in threads: a chatty build would otherwise block on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(stdout.trim().to_string()),
        Some(_) => Err(Error::Docker {
            command,
            stderr: stderr.trim().to_string(),
        }),
        None => Err(Error::Docker {
            command,
            stderr: format!("timed out after {timeout:?}"),
        }),
    }
}

/// True when a docker engine answers `docker info` within `timeout`.
pub fn engine_available(timeout: Duration) -> bool {
    docker(&["info", "--format", "{{.ServerVersion}}"], timeout).is_ok_and(|v| !v.is_empty())
}

fn which(program: &Path) -> Result<PathBuf> {
    if program.components().count() > 1 {
        return Ok(program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Config(format!("{} not found on PATH", program.display())))
}

/// Host paths `ldd` resolves for `binary`, plus the dynamic loader.
fn shared_libs(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| Error::Spawn {
            program: "ldd".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "ldd {} failed (a static or foreign binary?): {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

fn fingerprint(redis: &Path) -> Result<String> {
    let bin = fs::read(redis).map_err(|e| Error::io(format!("reading {}", redis.display()), e))?;
    let mut h = DefaultHasher::new();
    bin.hash(&mut h);
    server::clock_shim_bytes().hash(&mut h);
    DOCKERFILE.hash(&mut h);
    Ok(format!("{:016x}", h.finish()))
}

fn copy_into(root: &Path, host: &Path) -> Result<()> {
    let rel = host.strip_prefix("/").unwrap_or(host);
    let dest = root.join(rel);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    // fs::copy follows symlinks, which is what a FROM-scratch image needs.
    fs::copy(host, &dest).map_err(|e| Error::io(format!("copying {}", host.display()), e))?;
    Ok(())
}

/// Builds [`IMAGE`] unless an image with the same fingerprint (redis binary, clock shim,
/// Dockerfile) exists. Serialised within the process; parallel processes may both build,
/// which is harmless.
pub(crate) fn ensure_image(redis_server: &Path) -> Result<()> {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let redis = which(redis_server)?;
    let fp = fingerprint(&redis)?;
    let label_fmt = format!("{{{{index .Config.Labels \"{FINGERPRINT_LABEL}\"}}}}");
    if docker(
        &["image", "inspect", "--format", &label_fmt, IMAGE],
        CMD_TIMEOUT,
    )
    .is_ok_and(|l| l == fp)
    {
        return Ok(());
    }
    let ctx = std::env::temp_dir().join(format!("testcluster-image-{}", std::process::id()));
    let _ = fs::remove_dir_all(&ctx);
    let root = ctx.join("rootfs");
    let result = (|| {
        copy_into(&root, &redis)?;
        // The image runs "redis-server" from PATH whatever the host path was.
        let usr_bin = root.join("usr/bin");
        fs::create_dir_all(&usr_bin).map_err(|e| Error::io("creating usr/bin", e))?;
        if redis != Path::new("/usr/bin/redis-server") {
            fs::copy(&redis, usr_bin.join("redis-server"))
                .map_err(|e| Error::io("copying redis-server", e))?;
        }
        for lib in shared_libs(&redis)? {
            copy_into(&root, &lib)?;
        }
        let shim_dir = root.join("usr/lib/testcluster");
        fs::create_dir_all(&shim_dir).map_err(|e| Error::io("creating shim dir", e))?;
        fs::write(
            shim_dir.join(server::CLOCK_SHIM_NAME),
            server::clock_shim_bytes(),
        )
        .map_err(|e| Error::io("writing clock shim", e))?;
        for d in ["data", "tmp", "etc"] {
            fs::create_dir_all(root.join(d)).map_err(|e| Error::io(format!("creating {d}"), e))?;
        }
        // redis never looks users up, but tools run with `docker exec` may.
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/:/sbin/nologin\nredis:x:999:999:redis:/data:/sbin/nologin\n",
        )
        .and_then(|()| fs::write(root.join("etc/group"), "root:x:0:\nredis:x:999:\n"))
        .map_err(|e| Error::io("writing /etc/passwd", e))?;
        fs::write(ctx.join("Dockerfile"), DOCKERFILE)
            .map_err(|e| Error::io("writing Dockerfile", e))?;
        let label = format!("{FINGERPRINT_LABEL}={fp}");
        let ctx_s = ctx.display().to_string();
        docker(
            &["build", "-q", "--label", &label, "-t", IMAGE, &ctx_s],
            BUILD_TIMEOUT,
        )?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&ctx);
    result
}

/// Creates a bridge network with a random private /24; returns its "10.x.y" prefix.
pub(crate) fn create_network(name: &str, owner_label: &str) -> Result<String> {
    let mut last = None;
    for attempt in 0..40u64 {
        let r = random(attempt);
        let prefix = format!("10.{}.{}", 100 + r % 150, (r >> 8) % 256);
        let subnet = format!("{prefix}.0/24");
        match docker(
            &[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &subnet,
                "--label",
                LABEL,
                "--label",
                owner_label,
                name,
            ],
            CMD_TIMEOUT,
        ) {
            Ok(_) => return Ok(prefix),
            Err(Error::Docker { stderr, .. }) if stderr.contains("overlap") => {
                last = Some(stderr);
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Docker {
        command: "network create".into(),
        stderr: last.unwrap_or_default(),
    })
}

fn random(salt: u64) -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    let mut h = RandomState::new().build_hasher();
    h.write_u64(salt);
    h.write_u32(std::process::id());
    h.finish()
}

/// Everything `docker run` needs for one master.
pub(crate) struct RunArgs<'a> {
    pub spec: &'a Spec,
    pub name: &'a str,
    pub network: &'a str,
    pub ip: &'a str,
    pub owner_label: &'a str,
}

/// Creates and starts the container; does not wait for readiness.
pub(crate) fn run_container(a: &RunArgs<'_>) -> Result<()> {
    let spec = a.spec;
    // SAFETY: getuid/getgid cannot fail. Running as the host user keeps the bind-mounted
    // data dir deletable by the harness (DataOnRestart::Lose, drop) without root.
    let user = unsafe { format!("{}:{}", libc::getuid(), libc::getgid()) };
    let publish = format!("127.0.0.1:{}:6379", spec.port);
    let mount = format!("{}:{MOUNT}", spec.dir.display());
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--pull",
        "never",
        "--name",
        a.name,
        "--network",
        a.network,
        "--ip",
        a.ip,
        "-p",
        &publish,
        "-v",
        &mount,
        "--user",
        &user,
        "--label",
        LABEL,
        "--label",
        a.owner_label,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(tls) = &spec.tls {
        args.extend(["-p".into(), format!("127.0.0.1:{}:{TLS_PORT}", tls.port)]);
    }
    if let Some(lib) = &spec.faketime {
        let in_container = if *lib == spec.dir.join(server::CLOCK_SHIM_NAME) {
            format!("{MOUNT}/{}", server::CLOCK_SHIM_NAME)
        } else {
            args.extend([
                "-v".into(),
                format!("{}:/opt/faketime.so:ro", lib.display()),
            ]);
            "/opt/faketime.so".into()
        };
        args.extend([
            "-e".into(),
            format!("LD_PRELOAD={in_container}"),
            "-e".into(),
            format!("FAKETIME_TIMESTAMP_FILE={MOUNT}/faketime.rc"),
            "-e".into(),
            "FAKETIME_NO_CACHE=1".into(),
            "-e".into(),
            "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
        ]);
    }
    args.push(IMAGE.into());
    args.extend(
        [
            "redis-server",
            "--port",
            "6379",
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args.push(format!("{MOUNT}/data"));
    args.push("--logfile".into());
    args.push(format!("{MOUNT}/redis.log"));
    args.extend(spec.listener_args(MOUNT, Some(TLS_PORT)));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&refs, CMD_TIMEOUT).map(|_| ())
}

/// `running`, `paused`, `exited`, ... or `None` when the container does not exist.
pub(crate) fn status(name: &str) -> Option<String> {
    docker(
        &["inspect", "--format", "{{.State.Status}}", name],
        CMD_TIMEOUT,
    )
    .ok()
}

/// Host pid of the container's redis-server, when running.
pub(crate) fn pid(name: &str) -> Option<u32> {
    docker(
        &["inspect", "--format", "{{.State.Pid}}", name],
        CMD_TIMEOUT,
    )
    .ok()?
    .parse()
    .ok()
    .filter(|p| *p > 0)
}

/// Removes containers and networks left by test processes that died without dropping
/// their cluster (a SIGKILLed test binary cannot run `Drop`). Detached (CLI) clusters are
/// labelled differently and left alone.
pub(crate) fn reap_stale() {
    let Ok(list) = docker(
        &[
            "ps",
            "-a",
            "--filter",
            &format!("label={LABEL}"),
            "--format",
            "{{.Names}}\t{{.Label \"testcluster.owner\"}}",
        ],
        CMD_TIMEOUT,
    ) else {
        return;
    };
    let stale = stale_names(&list);
    if !stale.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(stale);
        let _ = docker(&args, CMD_TIMEOUT);
    }
    if let Ok(nets) = docker(
        &[
            "network",
            "ls",
            "--filter",
            &format!("label={LABEL}"),
            "--format",
            "{{.Name}}\t{{.Label \"testcluster.owner\"}}",
        ],
        CMD_TIMEOUT,
    ) {
        for name in stale_names(&nets) {
            let _ = docker(&["network", "rm", name], CMD_TIMEOUT);
        }
    }
}

/// The names in a `docker ... --format "{{.Name}}\t{{.Label "testcluster.owner"}}"` listing
/// whose owner (`pid-N`) is a process that no longer exists (never this one).
fn stale_names(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, owner)| {
            owner
                .strip_prefix("pid-")
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| {
                    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
                })
        })
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stale_names_are_those_of_dead_owners() {
        let me = std::process::id();
        let listing = format!("ours\tpid-{me}\ngone\tpid-4294967295\ncli\tdetached\nbare\n");
        assert_eq!(super::stale_names(&listing), ["gone"]);
    }
}
