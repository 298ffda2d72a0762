//! `sluice queue list|declare|describe|purge|delete`: AMQP queues through the admin API
//! (`/api/queues/…`). `-o json` prints the API's objects.

use admin::api::{BindingInfo, QueueInfo, QueuePolicyInfo, path_segment};
use hyper::Method;
use serde_json::json;

use super::admin_http::{AdminClient, AdminError};
use super::args::QueueCommand;
use super::output::{print_json_if, print_table};
use super::{Ctx, arguments_json};

pub async fn run(ctx: &Ctx, cmd: QueueCommand) -> anyhow::Result<i32> {
    let client = ctx.admin_client()?;
    match cmd {
        QueueCommand::List { vhost } => list(ctx, &client, vhost.as_deref()).await,
        QueueCommand::Declare {
            name,
            vhost,
            transient,
            auto_delete,
            args,
        } => {
            let body = json!({
                "durable": !transient,
                "auto_delete": auto_delete,
                "arguments": arguments_json(&args)?,
            });
            declare(ctx, &client, &vhost.vhost, &name, &body).await
        }
        QueueCommand::Describe { name, vhost } => describe(ctx, &client, &vhost.vhost, &name).await,
        QueueCommand::Purge { name, vhost } => purge(ctx, &client, &vhost.vhost, &name).await,
        QueueCommand::Delete {
            name,
            vhost,
            if_unused,
            if_empty,
            if_exists,
        } => {
            let flags = Flags {
                if_unused,
                if_empty,
                if_exists,
            };
            delete(ctx, &client, &vhost.vhost, &name, flags).await
        }
    }
}

/// `/api/queues/{vhost}/{name}`.
pub fn queue_path(vhost: &str, name: &str) -> String {
    format!("/api/queues/{}/{}", path_segment(vhost), path_segment(name))
}

/// `'orders'` in `/`, `'orders' in vhost 'dev'` elsewhere.
pub fn named(name: &str, vhost: &str) -> String {
    if vhost == "/" {
        name.to_string()
    } else {
        format!("{name} (vhost {vhost})")
    }
}

/// An answer the API documents, read into its type.
pub fn parse<T: serde::de::DeserializeOwned>(
    context: &str,
    value: serde_json::Value,
) -> anyhow::Result<T> {
    serde_json::from_value(value).map_err(|e| {
        anyhow::Error::new(AdminError::Api {
            context: context.to_string(),
            status: 200,
            message: format!("unexpected answer: {e}"),
        })
    })
}

async fn list(ctx: &Ctx, client: &AdminClient, vhost: Option<&str>) -> anyhow::Result<i32> {
    let path = match vhost {
        Some(v) => format!("/api/queues/{}", path_segment(v)),
        None => "/api/queues".to_string(),
    };
    let value = client.get("list queues", &path).await?;
    if print_json_if(ctx.output, &value) {
        return Ok(0);
    }
    let queues: Vec<QueueInfo> = parse("list queues", value)?;
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            vec![
                q.vhost.clone(),
                q.name.clone(),
                q.messages_ready.to_string(),
                q.messages_unacknowledged.to_string(),
                q.consumers.to_string(),
                features(q),
            ]
        })
        .collect();
    print_table(
        &[
            "VHOST",
            "QUEUE",
            "READY",
            "UNACKED",
            "CONSUMERS",
            "FEATURES",
        ],
        &rows,
    );
    if rows.is_empty() {
        eprintln!("no queues yet; declare one with `sluice queue declare NAME`");
    }
    Ok(0)
}

/// durable/transient, auto-delete, exclusive, then the arguments set (without `x-`).
fn features(q: &QueueInfo) -> String {
    let mut out = vec![if q.durable { "durable" } else { "transient" }.to_string()];
    if q.auto_delete {
        out.push("auto-delete".into());
    }
    if q.exclusive {
        out.push("exclusive".into());
    }
    out.extend(
        q.arguments
            .keys()
            .map(|k| k.strip_prefix("x-").unwrap_or(k).to_string()),
    );
    out.join(",")
}

async fn declare(
    ctx: &Ctx,
    client: &AdminClient,
    vhost: &str,
    name: &str,
    body: &serde_json::Value,
) -> anyhow::Result<i32> {
    let context = format!("declare queue {}", named(name, vhost));
    let answer = client
        .call(&context, Method::PUT, &queue_path(vhost, name), Some(body))
        .await?;
    let created = answer.status == 201;
    let value = json!({"vhost": vhost, "name": name, "created": created});
    if !print_json_if(ctx.output, &value) {
        if created {
            crate::outln!("declared queue {}", named(name, vhost));
        } else {
            crate::outln!("queue {} already exists", named(name, vhost));
        }
    }
    Ok(0)
}

async fn describe(ctx: &Ctx, client: &AdminClient, vhost: &str, name: &str) -> anyhow::Result<i32> {
    let context = format!("describe queue {}", named(name, vhost));
    let path = queue_path(vhost, name);
    let mut value = client.get(&context, &path).await?;
    let bindings = client.get(&context, &format!("{path}/bindings")).await?;
    value["bindings"] = bindings.clone();
    if print_json_if(ctx.output, &value) {
        return Ok(0);
    }
    let q: QueueInfo = parse(&context, value)?;
    let bindings: Vec<BindingInfo> = parse(&context, bindings)?;
    crate::outln!("Queue: {}  Vhost: {}", q.name, q.vhost);
    crate::outln!(
        "  durable: {}  auto-delete: {}  exclusive: {}",
        q.durable,
        q.auto_delete,
        q.exclusive
    );
    crate::outln!(
        "  ready: {}  unacked: {}  scheduled: {}  consumers: {}",
        q.messages_ready,
        q.messages_unacknowledged,
        q.messages_scheduled,
        q.consumers
    );
    let s = &q.message_stats;
    crate::outln!(
        "  published: {}  delivered: {}  acked: {}  returned: {}  dead-lettered: {}  (since the server started)",
        s.published,
        s.delivered,
        s.acked,
        s.returned,
        s.dead_lettered
    );
    if q.arguments.is_empty() {
        crate::outln!("Arguments: (none)");
    } else {
        crate::outln!("Arguments:");
        let rows: Vec<Vec<String>> = q
            .arguments
            .iter()
            .map(|(k, v)| vec![format!("  {k}"), v.clone()])
            .collect();
        crate::out!(
            "{}",
            super::output::render_table(&["  NAME", "VALUE"], &rows)
        );
    }
    let policy = policy_lines(&q.effective_policy);
    if policy.is_empty() {
        crate::outln!("Policy: (a plain queue)");
    } else {
        crate::outln!("Policy:");
        let rows: Vec<Vec<String>> = policy
            .into_iter()
            .map(|(k, v)| vec![format!("  {k}"), v])
            .collect();
        crate::out!(
            "{}",
            super::output::render_table(&["  RULE", "SETTING"], &rows)
        );
    }
    if bindings.is_empty() {
        crate::outln!("Bindings: (none; the default exchange delivers by the queue's name)");
    } else {
        crate::outln!("Bindings:");
        let rows: Vec<Vec<String>> = bindings
            .iter()
            .map(|b| {
                vec![
                    format!("  {}", b.source),
                    b.routing_key.clone(),
                    super::binding::arguments_text(&b.arguments),
                ]
            })
            .collect();
        crate::out!(
            "{}",
            super::output::render_table(&["  EXCHANGE", "ROUTING-KEY", "ARGUMENTS"], &rows)
        );
    }
    Ok(0)
}

/// What a queue's arguments make of it, one (rule, setting) per line.
fn policy_lines(p: &QueuePolicyInfo) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |k: &str, v: String| out.push((k.to_string(), v));
    if let Some(ms) = p.message_ttl_ms {
        add("message TTL", format!("{ms} ms"));
    }
    if let Some(ms) = p.expires_ms {
        add("deleted when unused for", format!("{ms} ms"));
    }
    if let Some(x) = &p.dead_letter_exchange {
        let via = if x.is_empty() {
            "(default exchange)"
        } else {
            x
        };
        let key = p
            .dead_letter_routing_key
            .as_deref()
            .map_or("with its own routing key".to_string(), |k| {
                format!("with routing key '{k}'")
            });
        add("dead letters to", format!("exchange {via}, {key}"));
    }
    if let Some(n) = p.delivery_limit {
        add("delivery limit", format!("{n} returns"));
    }
    if let Some(n) = p.max_length {
        add("max length", format!("{n} messages"));
    }
    if let Some(n) = p.max_length_bytes {
        add("max length", format!("{n} bytes"));
    }
    if let Some(o) = &p.overflow {
        add("when full", o.clone());
    }
    if let Some(b) = &p.retry_backoff {
        add("retry after", b.clone());
    }
    if let Some(n) = p.retry_max {
        add(
            "retries",
            format!("at most {n}, then dead (delivery_limit)"),
        );
    }
    if let Some(n) = p.max_priority {
        add("max priority", n.to_string());
    }
    out
}

async fn purge(ctx: &Ctx, client: &AdminClient, vhost: &str, name: &str) -> anyhow::Result<i32> {
    let context = format!("purge queue {}", named(name, vhost));
    let path = format!("{}/contents", queue_path(vhost, name));
    let answer = client.call(&context, Method::DELETE, &path, None).await?;
    let n = answer.body["message_count"].as_u64().unwrap_or(0);
    let value = json!({"vhost": vhost, "name": name, "message_count": n});
    if !print_json_if(ctx.output, &value) {
        crate::outln!(
            "purged {n} message{} from queue {}",
            if n == 1 { "" } else { "s" },
            named(name, vhost)
        );
    }
    Ok(0)
}

/// `queue delete`'s flags.
struct Flags {
    if_unused: bool,
    if_empty: bool,
    if_exists: bool,
}

async fn delete(
    ctx: &Ctx,
    client: &AdminClient,
    vhost: &str,
    name: &str,
    flags: Flags,
) -> anyhow::Result<i32> {
    let context = format!("delete queue {}", named(name, vhost));
    let path = format!(
        "{}?if-unused={}&if-empty={}",
        queue_path(vhost, name),
        flags.if_unused,
        flags.if_empty
    );
    let deleted = match client.call(&context, Method::DELETE, &path, None).await {
        Ok(_) => true,
        Err(AdminError::Api { status: 404, .. }) if flags.if_exists => false,
        Err(e) => return Err(e.into()),
    };
    let value = json!({"vhost": vhost, "name": name, "deleted": deleted});
    if !print_json_if(ctx.output, &value) {
        if deleted {
            crate::outln!("deleted queue {}", named(name, vhost));
        } else {
            crate::outln!("queue {} does not exist", named(name, vhost));
        }
    }
    Ok(0)
}
