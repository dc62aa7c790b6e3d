//! Rollout hooks: a command or a webhook run at a named point of a rollout
//! (`pre_rollout`, `pre_switch`, `post_promotion`, `on_rollback`), with a
//! timeout, its exit code, duration and (truncated) output kept for the
//! audit trail. The documented use is expand/contract schema migrations:
//! `pre_switch` expands, `post_promotion` contracts, `on_rollback` reverses.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::time::Instant;

/// Output beyond this is cut: the audit trail is not a log store.
pub const MAX_OUTPUT: usize = 4096;

/// Where in a rollout a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// Before the pre-checks, before any traffic.
    PreRollout,
    /// After the pre-checks, before `to` gets its first request.
    PreSwitch,
    /// After the post-promotion monitoring period: the contract step.
    PostPromotion,
    /// After an abort has put the traffic back on `from`.
    OnRollback,
}

impl HookPoint {
    pub const ALL: [HookPoint; 4] = [
        HookPoint::PreRollout,
        HookPoint::PreSwitch,
        HookPoint::PostPromotion,
        HookPoint::OnRollback,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HookPoint::PreRollout => "pre_rollout",
            HookPoint::PreSwitch => "pre_switch",
            HookPoint::PostPromotion => "post_promotion",
            HookPoint::OnRollback => "on_rollback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAction {
    /// `argv[0]` run with the rest as arguments (no shell).
    Command {
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        dir: Option<String>,
    },
    /// POST of a JSON description of the rollout; non-2xx is a failure.
    Webhook { url: String },
}

/// What a failing hook does to the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Abort,
    Warn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub name: String,
    pub action: HookAction,
    pub timeout: Duration,
    pub on_failure: OnFailure,
}

/// What the hook is told about the rollout (as `SLUICE_*` variables or
/// the webhook's JSON body).
#[derive(Debug, Clone)]
pub struct HookContext {
    pub rollout_id: u64,
    pub from_pool: String,
    pub to_pool: String,
    pub from_version: String,
    pub to_version: String,
    pub dry_run: bool,
}

/// How one hook run went.
#[derive(Debug, Clone, PartialEq)]
pub struct HookOutcome {
    pub name: String,
    pub point: HookPoint,
    pub ok: bool,
    /// Exit code of a command, HTTP status of a webhook.
    pub code: Option<i32>,
    pub duration: Duration,
    /// stdout then stderr (or the response body), cut at [`MAX_OUTPUT`].
    pub output: String,
    /// Why it failed, for people.
    pub error: Option<String>,
}

impl HookOutcome {
    /// As the API shows it.
    pub fn view(&self) -> sluice_api::HookRun {
        sluice_api::HookRun {
            name: self.name.clone(),
            point: self.point.name().to_owned(),
            ok: self.ok,
            code: self.code,
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            output: self.output.clone(),
            error: self.error.clone(),
        }
    }

    /// One line: `pre_switch hook "expand": exit 0 in 12 ms`.
    pub fn summary(&self) -> String {
        let what = match (&self.error, self.code) {
            (Some(e), _) => e.clone(),
            (None, Some(code)) => format!("exit {code}"),
            (None, None) => "ok".into(),
        };
        format!(
            "{} hook {:?}: {what} in {} ms",
            self.point.name(),
            self.name,
            self.duration.as_millis()
        )
    }
}

/// Runs `hook` to completion or its timeout (a command is then killed).
pub async fn run(hook: &Hook, point: HookPoint, ctx: &HookContext) -> HookOutcome {
    let started = Instant::now();
    let result = match &hook.action {
        HookAction::Command { argv, env, dir } => {
            run_command(argv, env, dir.as_deref(), point, ctx, hook.timeout).await
        }
        HookAction::Webhook { url } => run_webhook(url, point, ctx, hook.timeout).await,
    };
    let (code, output, error) = match result {
        Ok((code, output, error)) => (code, output, error),
        Err(error) => (None, String::new(), Some(error)),
    };
    HookOutcome {
        name: hook.name.clone(),
        point,
        ok: error.is_none(),
        code,
        duration: started.elapsed(),
        output,
        error,
    }
}

type Ran = Result<(Option<i32>, String, Option<String>), String>;

async fn run_command(
    argv: &[String],
    env: &BTreeMap<String, String>,
    dir: Option<&str>,
    point: HookPoint,
    ctx: &HookContext,
    timeout: Duration,
) -> Ran {
    let (program, args) = argv.split_first().ok_or("the command is empty")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env)
        .env("SLUICE_HOOK", point.name())
        .env("SLUICE_ROLLOUT_ID", ctx.rollout_id.to_string())
        .env("SLUICE_FROM_POOL", &ctx.from_pool)
        .env("SLUICE_TO_POOL", &ctx.to_pool)
        .env("SLUICE_FROM_VERSION", &ctx.from_version)
        .env("SLUICE_TO_VERSION", &ctx.to_version)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if ctx.dry_run {
        command.env("SLUICE_DRY_RUN", "1");
    }
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not start {program:?}: {e}"))?;
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("could not capture the output".into());
    };
    let exchange = async {
        // Both pipes drained at once: a chatty stderr must not block stdout.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (a, b) = tokio::join!(read_capped(&mut stdout, &mut out), read_capped(&mut stderr, &mut err));
        let status = child.wait().await;
        (a.and(b).and(status), out, err)
    };
    let Ok((status, out, err)) = tokio::time::timeout(timeout, exchange).await else {
        // Dropping the future drops the child: kill_on_drop ends it.
        return Ok((None, String::new(), Some(format!("timed out after {timeout:?}"))));
    };
    let status = status.map_err(|e| format!("could not run {program:?}: {e}"))?;
    let mut output = String::from_utf8_lossy(&out).into_owned();
    output.push_str(&String::from_utf8_lossy(&err));
    let output = truncate(output);
    let code = status.code();
    let error = (!status.success()).then(|| match code {
        Some(code) => format!("exited with {code}"),
        None => "killed by a signal".to_owned(),
    });
    Ok((code, output, error))
}

async fn run_webhook(url: &str, point: HookPoint, ctx: &HookContext, timeout: Duration) -> Ran {
    let body = json!({
        "source": "sluice",
        "hook": point.name(),
        "rollout_id": ctx.rollout_id,
        "from_pool": ctx.from_pool,
        "to_pool": ctx.to_pool,
        "from_version": ctx.from_version,
        "to_version": ctx.to_version,
        "dry_run": ctx.dry_run,
    });
    let exchange = sluice_transport::webclient::post_json(url, Bytes::from(body.to_string()), MAX_OUTPUT * 4);
    let (status, text) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("timed out after {timeout:?}"))??;
    let text = String::from_utf8_lossy(&text).into_owned();
    let error = (!status.is_success()).then(|| format!("webhook answered {status}"));
    Ok((Some(i32::from(status.as_u16())), truncate(text), error))
}

/// Reads `from` to its end (a full pipe would block the hook) but keeps
/// only the first bytes.
async fn read_capped(from: &mut (impl AsyncReadExt + Unpin), into: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        let n = from.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        let room = (MAX_OUTPUT + 1).saturating_sub(into.len());
        into.extend_from_slice(&chunk[..n.min(room)]);
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("…[truncated]");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> HookContext {
        HookContext {
            rollout_id: 7,
            from_pool: "blue".into(),
            to_pool: "green".into(),
            from_version: "v1".into(),
            to_version: "v2".into(),
            dry_run: true,
        }
    }

    fn command(argv: &[&str], timeout: Duration) -> Hook {
        Hook {
            name: "t".into(),
            action: HookAction::Command {
                argv: argv.iter().map(|s| (*s).to_owned()).collect(),
                env: BTreeMap::from([("EXTRA".to_owned(), "x".to_owned())]),
                dir: None,
            },
            timeout,
            on_failure: OnFailure::Abort,
        }
    }

    #[tokio::test]
    async fn a_command_sees_the_rollout_and_its_output_is_kept() {
        let hook = command(
            &[
                "sh",
                "-c",
                "echo $SLUICE_HOOK $SLUICE_TO_VERSION $SLUICE_DRY_RUN $EXTRA; echo oops >&2",
            ],
            Duration::from_secs(10),
        );
        let out = run(&hook, HookPoint::PreSwitch, &ctx()).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(out.code, Some(0));
        assert_eq!(out.output, "pre_switch v2 1 x\noops\n");
    }

    #[tokio::test]
    async fn failure_timeout_and_missing_program_are_failures() {
        let failed = run(
            &command(&["sh", "-c", "exit 3"], Duration::from_secs(10)),
            HookPoint::PreSwitch,
            &ctx(),
        )
        .await;
        assert_eq!((failed.ok, failed.code), (false, Some(3)));
        assert_eq!(failed.error.as_deref(), Some("exited with 3"));

        let slow = run(
            &command(&["sleep", "30"], Duration::from_millis(200)),
            HookPoint::PreSwitch,
            &ctx(),
        )
        .await;
        assert!(!slow.ok);
        assert!(slow.error.unwrap().starts_with("timed out"));
        assert!(slow.duration < Duration::from_secs(5));

        let missing = run(
            &command(&["/nonexistent/hook"], Duration::from_secs(1)),
            HookPoint::PreSwitch,
            &ctx(),
        )
        .await;
        assert!(!missing.ok);
        assert!(missing.error.unwrap().contains("could not start"));
    }

    #[tokio::test]
    async fn output_is_truncated() {
        let out = run(
            &command(
                &["sh", "-c", "head -c 10000 /dev/zero | tr '\\0' a"],
                Duration::from_secs(10),
            ),
            HookPoint::PreSwitch,
            &ctx(),
        )
        .await;
        assert!(out.ok);
        assert!(out.output.len() < MAX_OUTPUT + 20);
        assert!(out.output.ends_with("…[truncated]"));
    }

    #[tokio::test]
    async fn an_unreachable_webhook_fails() {
        let hook = Hook {
            name: "w".into(),
            action: HookAction::Webhook {
                url: "http://127.0.0.1:9/hook".into(),
            },
            timeout: Duration::from_secs(2),
            on_failure: OnFailure::Warn,
        };
        let out = run(&hook, HookPoint::OnRollback, &ctx()).await;
        assert!(!out.ok);
        assert!(out.error.unwrap().contains("unreachable"));
    }
}
