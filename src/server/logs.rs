//! `/containerLogs/{ns}/{pod}/{container}`: a container's log as `kubectl logs` asks for
//! it (follow, tailLines, sinceSeconds, sinceTime, timestamps, previous, limitBytes),
//! streamed from the log store; follow is pushed by the writer and ends with the run.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ServerState, names};
use crate::logs::{self, LogError, LogOptions};

type Failure = (StatusCode, String);

pub async fn container_logs(
    State(state): State<Arc<ServerState>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    match serve(&state, &ns, &pod, &container, query.as_deref().unwrap_or("")).await {
        Ok(r) => r,
        Err((code, msg)) => (code, msg).into_response(),
    }
}

async fn serve(
    state: &ServerState,
    ns: &str,
    pod: &str,
    container: &str,
    query: &str,
) -> Result<Response, Failure> {
    names::check_names(ns, pod, container)?;
    let (opts, previous) = parse_query(query)?;
    let entry = state
        .pods
        .get(ns, pod)
        .ok_or((StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found on this node")))?;
    let in_spec = entry.pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().chain(s.init_containers.iter().flatten()).any(|c| c.name == container)
    });
    if !in_spec {
        return Err((StatusCode::BAD_REQUEST, format!("container {container} is not valid for pod {pod}")));
    }
    let current = entry.containers.get(container).map(|c| c.run).ok_or((
        StatusCode::BAD_REQUEST,
        format!("container {container:?} in pod {pod:?} is waiting to start"),
    ))?;
    let run = if previous {
        let runs = logs::run_paths(&entry.log_dir, container);
        runs.iter().rev().map(|(n, _)| *n).find(|n| *n < current).ok_or((
            StatusCode::BAD_REQUEST,
            format!("previous terminated container {container:?} in pod {pod:?} not found"),
        ))?
    } else {
        current
    };
    let path = logs::container_log(&entry.log_dir, container, run);
    match logs::stream(&state.logs, &path, opts).await {
        Ok(stream) => Ok(([(header::CONTENT_TYPE, "text/plain")], Body::from_stream(stream)).into_response()),
        Err(LogError::NotFound { .. }) => {
            Err((StatusCode::NOT_FOUND, format!("no logs for container {container:?} in pod {ns}/{pod} yet")))
        }
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The query kubectl sends; anything malformed is a 400 naming the parameter.
fn parse_query(query: &str) -> Result<(LogOptions, bool), Failure> {
    let bad = |k: &str, v: &str, why: &str| (StatusCode::BAD_REQUEST, format!("invalid {k}={v:?}: {why}"));
    let mut opts = LogOptions::default();
    let mut previous = false;
    let (mut since_seconds, mut since_time) = (None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let flag = || match v.as_ref() {
            "true" | "1" | "" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(bad(&k, &v, "want true or false")),
        };
        let number = || v.parse::<u64>().map_err(|_| bad(&k, &v, "want a non-negative integer"));
        match k.as_ref() {
            "follow" => opts.follow = flag()?,
            "timestamps" => opts.timestamps = flag()?,
            "previous" => previous = flag()?,
            "tailLines" => opts.tail_lines = Some(number()?),
            "limitBytes" => match number()? {
                0 => return Err(bad(&k, &v, "must be greater than 0")),
                n => opts.limit_bytes = Some(n),
            },
            "sinceSeconds" => match number()? {
                0 => return Err(bad(&k, &v, "must be greater than 0")),
                n => since_seconds = Some(n),
            },
            "sinceTime" => {
                let ts: k8s_openapi::jiff::Timestamp =
                    v.parse().map_err(|_| bad(&k, &v, "want an RFC 3339 time"))?;
                since_time = Some(SystemTime::from(ts));
            }
            _ => {} // e.g. "container", "pretty": ignored, as by the kubelet
        }
    }
    opts.since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "at most one of sinceSeconds or sinceTime may be specified".into(),
            ));
        }
        // Further back than the clock goes (`sinceSeconds=9223372036854775807`): everything.
        (Some(s), None) => {
            Some(SystemTime::now().checked_sub(Duration::from_secs(s)).unwrap_or(SystemTime::UNIX_EPOCH))
        }
        (None, t) => t,
    };
    Ok((opts, previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_queries_parse_and_bad_ones_are_400() {
        let (o, prev) =
            parse_query("follow=true&tailLines=5&timestamps=true&limitBytes=10&previous=true").unwrap();
        assert!(o.follow && o.timestamps && prev);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(5), Some(10)));
        let (o, _) = parse_query("sinceTime=2026-01-02T03:04:05Z").unwrap();
        assert_eq!(
            o.since,
            Some(SystemTime::from("2026-01-02T03:04:05Z".parse::<k8s_openapi::jiff::Timestamp>().unwrap()))
        );
        for q in [
            "tailLines=-1",
            "follow=maybe",
            "sinceSeconds=0",
            "sinceTime=yesterday",
            "limitBytes=x",
            "sinceSeconds=5&sinceTime=2026-01-02T03:04:05Z",
        ] {
            assert_eq!(parse_query(q).unwrap_err().0, StatusCode::BAD_REQUEST, "{q}");
        }
    }

    #[test]
    fn huge_or_odd_values_are_an_answer_never_a_panic() {
        for n in [u64::MAX, i64::MAX as u64, 1 << 40, 86_400 * 365 * 10_000] {
            let (o, _) = parse_query(&format!("sinceSeconds={n}")).unwrap();
            let since = o.since.unwrap();
            assert!(since <= SystemTime::UNIX_EPOCH + Duration::from_secs(86_400), "{n}: {since:?}");
        }
        let (o, _) = parse_query("sinceTime=0001-01-01T00:00:00Z&tailLines=18446744073709551615").unwrap();
        assert!(o.since.unwrap() < SystemTime::UNIX_EPOCH && o.tail_lines == Some(u64::MAX));
        let pieces = [
            "sinceSeconds=",
            "sinceTime=",
            "limitBytes=",
            "tailLines=",
            "follow=",
            "%FF",
            "%",
            "=",
            "&",
            "9",
            "-",
            "99999999999999999999",
            "é",
            "9999-12-31T23:59:59.999999999Z",
            "+",
            "Z",
        ];
        let mut seed = 0x1234_5678_9abc_def1u64;
        for _ in 0..20_000 {
            let mut q = String::new();
            for _ in 0..(seed % 6) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                q.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let _ = parse_query(&q);
        }
    }
}
