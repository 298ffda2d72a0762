//! `sluice binding list|add|remove`: AMQP bindings through the admin API
//! (`/api/bindings/…`). A binding is named by its source exchange, destination, routing key
//! and arguments; `remove` finds the one matching all four and deletes it by its
//! `properties_key`.

use std::collections::BTreeMap;

use admin::api::{BindingInfo, path_segment};
use hyper::Method;
use serde_json::json;

use super::admin_http::{AdminClient, AdminError};
use super::args::{BindingArgs, BindingCommand, DestinationType};
use super::exchange::shown;
use super::output::{print_json_if, print_table};
use super::queue::parse;
use super::{Ctx, arguments_json, parse_kv};

pub async fn run(ctx: &Ctx, cmd: BindingCommand) -> anyhow::Result<i32> {
    let client = ctx.admin_client()?;
    match cmd {
        BindingCommand::List { vhost } => list(ctx, &client, vhost.as_deref()).await,
        BindingCommand::Add(b) => add(ctx, &client, &b).await,
        BindingCommand::Remove(b) => remove(ctx, &client, &b).await,
    }
}

/// Binding arguments as `k=v,k=v`.
pub fn arguments_text(args: &BTreeMap<String, String>) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `/api/bindings/{vhost}/e/{source}/{q|e}/{destination}`.
fn between_path(b: &BindingArgs) -> String {
    let exchange = |n: &str| path_segment(if n.is_empty() { "amq.default" } else { n });
    let (kind, destination) = match b.destination_type {
        DestinationType::Queue => ("q", path_segment(&b.destination)),
        DestinationType::Exchange => ("e", exchange(&b.destination)),
    };
    format!(
        "/api/bindings/{}/e/{}/{kind}/{destination}",
        path_segment(&b.vhost.vhost),
        exchange(&b.source),
    )
}

/// "queue 'q' to exchange 'x' with routing key 'k'".
fn describe(b: &BindingArgs) -> String {
    let kind = match b.destination_type {
        DestinationType::Queue => "queue",
        DestinationType::Exchange => "exchange",
    };
    let mut s = format!(
        "{kind} {} to exchange {} with routing key '{}'",
        b.destination,
        shown(&b.source),
        b.routing_key
    );
    if !b.args.is_empty() {
        s.push_str(&format!(" and arguments {}", b.args.join(",")));
    }
    if b.vhost.vhost != "/" {
        s.push_str(&format!(" (vhost {})", b.vhost.vhost));
    }
    s
}

async fn list(ctx: &Ctx, client: &AdminClient, vhost: Option<&str>) -> anyhow::Result<i32> {
    let path = match vhost {
        Some(v) => format!("/api/bindings/{}", path_segment(v)),
        None => "/api/bindings".to_string(),
    };
    let value = client.get("list bindings", &path).await?;
    if print_json_if(ctx.output, &value) {
        return Ok(0);
    }
    let bindings: Vec<BindingInfo> = parse("list bindings", value)?;
    let rows: Vec<Vec<String>> = bindings
        .iter()
        .map(|b| {
            vec![
                b.vhost.clone(),
                shown(&b.source).to_string(),
                b.destination.clone(),
                b.destination_type.clone(),
                b.routing_key.clone(),
                arguments_text(&b.arguments),
            ]
        })
        .collect();
    print_table(
        &[
            "VHOST",
            "EXCHANGE",
            "DESTINATION",
            "TYPE",
            "ROUTING-KEY",
            "ARGUMENTS",
        ],
        &rows,
    );
    if rows.is_empty() {
        eprintln!("no bindings yet; add one with `sluice binding add EXCHANGE QUEUE -k KEY`");
    }
    Ok(0)
}

async fn add(ctx: &Ctx, client: &AdminClient, b: &BindingArgs) -> anyhow::Result<i32> {
    let context = format!("bind {}", describe(b));
    let body = json!({"routing_key": b.routing_key, "arguments": arguments_json(&b.args)?});
    let answer = client
        .call(&context, Method::POST, &between_path(b), Some(&body))
        .await?;
    let created = answer.status == 201;
    let value = json!({
        "vhost": b.vhost.vhost,
        "source": b.source,
        "destination": b.destination,
        "destination_type": match b.destination_type {
            DestinationType::Queue => "queue",
            DestinationType::Exchange => "exchange",
        },
        "routing_key": b.routing_key,
        "created": created,
    });
    if !print_json_if(ctx.output, &value) {
        if created {
            crate::outln!("bound {}", describe(b));
        } else {
            crate::outln!("already bound: {}", describe(b));
        }
    }
    Ok(0)
}

async fn remove(ctx: &Ctx, client: &AdminClient, b: &BindingArgs) -> anyhow::Result<i32> {
    let context = format!("unbind {}", describe(b));
    let path = between_path(b);
    let existing: Vec<BindingInfo> = parse(&context, client.get(&context, &path).await?)?;
    let mut wanted = BTreeMap::new();
    for a in &b.args {
        let (k, v) = parse_kv(a, "--arg")?;
        wanted.insert(k, v);
    }
    let Some(found) = existing
        .iter()
        .find(|e| e.routing_key == b.routing_key && e.arguments == wanted)
    else {
        return Err(AdminError::Api {
            context,
            status: 404,
            message: if existing.is_empty() {
                "no such binding (nothing is bound between them)".to_string()
            } else {
                format!(
                    "no such binding; bound between them: {}",
                    existing
                        .iter()
                        .map(|e| {
                            let mut s = format!("routing key '{}'", e.routing_key);
                            if !e.arguments.is_empty() {
                                s.push_str(&format!(" ({})", arguments_text(&e.arguments)));
                            }
                            s
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        }
        .into());
    };
    let delete = format!("{path}/{}", path_segment(&found.properties_key));
    client.call(&context, Method::DELETE, &delete, None).await?;
    let value = json!({
        "vhost": found.vhost,
        "source": found.source,
        "destination": found.destination,
        "destination_type": found.destination_type,
        "routing_key": found.routing_key,
        "removed": true,
    });
    if !print_json_if(ctx.output, &value) {
        crate::outln!("removed binding of {}", describe(b));
    }
    Ok(0)
}
