//! `sluice exchange list|declare|describe|delete`: AMQP exchanges through the admin API
//! (`/api/exchanges/…`). The default exchange is `amq.default` in URLs and `(default)` in
//! tables.

use admin::api::{BindingInfo, ExchangeInfo, path_segment};
use hyper::Method;
use serde_json::json;

use super::admin_http::{AdminClient, AdminError};
use super::args::ExchangeCommand;
use super::output::{print_json_if, print_table, render_table};
use super::queue::{named, parse};
use super::{Ctx, binding};

pub async fn run(ctx: &Ctx, cmd: ExchangeCommand) -> anyhow::Result<i32> {
    let client = ctx.admin_client()?;
    match cmd {
        ExchangeCommand::List { vhost } => list(ctx, &client, vhost.as_deref()).await,
        ExchangeCommand::Declare {
            name,
            kind,
            vhost,
            transient,
            auto_delete,
            internal,
            alternate_exchange,
        } => {
            let mut arguments = serde_json::Map::new();
            if let Some(ae) = alternate_exchange {
                arguments.insert("alternate-exchange".into(), ae.into());
            }
            let body = json!({
                "type": kind.name(),
                "durable": !transient,
                "auto_delete": auto_delete,
                "internal": internal,
                "arguments": arguments,
            });
            declare(ctx, &client, &vhost.vhost, &name, &body).await
        }
        ExchangeCommand::Describe { name, vhost } => {
            describe(ctx, &client, &vhost.vhost, &name).await
        }
        ExchangeCommand::Delete {
            name,
            vhost,
            if_unused,
            if_exists,
        } => delete(ctx, &client, &vhost.vhost, &name, if_unused, if_exists).await,
    }
}

/// `/api/exchanges/{vhost}/{name}` (`""`: `amq.default`).
pub fn exchange_path(vhost: &str, name: &str) -> String {
    let name = if name.is_empty() { "amq.default" } else { name };
    format!(
        "/api/exchanges/{}/{}",
        path_segment(vhost),
        path_segment(name)
    )
}

/// An exchange's name in a table.
pub fn shown(name: &str) -> &str {
    if name.is_empty() { "(default)" } else { name }
}

async fn list(ctx: &Ctx, client: &AdminClient, vhost: Option<&str>) -> anyhow::Result<i32> {
    let path = match vhost {
        Some(v) => format!("/api/exchanges/{}", path_segment(v)),
        None => "/api/exchanges".to_string(),
    };
    let value = client.get("list exchanges", &path).await?;
    if print_json_if(ctx.output, &value) {
        return Ok(0);
    }
    let exchanges: Vec<ExchangeInfo> = parse("list exchanges", value)?;
    let rows: Vec<Vec<String>> = exchanges
        .iter()
        .map(|x| {
            vec![
                x.vhost.clone(),
                shown(&x.name).to_string(),
                x.kind.clone(),
                features(x),
            ]
        })
        .collect();
    print_table(&["VHOST", "EXCHANGE", "TYPE", "FEATURES"], &rows);
    Ok(0)
}

fn features(x: &ExchangeInfo) -> String {
    let mut out = vec![if x.durable { "durable" } else { "transient" }.to_string()];
    if x.auto_delete {
        out.push("auto-delete".into());
    }
    if x.internal {
        out.push("internal".into());
    }
    if let Some(ae) = x.arguments.get("alternate-exchange") {
        out.push(format!("alternate-exchange={ae}"));
    }
    if x.builtin {
        out.push("built-in".into());
    }
    out.join(",")
}

async fn declare(
    ctx: &Ctx,
    client: &AdminClient,
    vhost: &str,
    name: &str,
    body: &serde_json::Value,
) -> anyhow::Result<i32> {
    let context = format!("declare exchange {}", named(name, vhost));
    let answer = client
        .call(
            &context,
            Method::PUT,
            &exchange_path(vhost, name),
            Some(body),
        )
        .await?;
    let created = answer.status == 201;
    let value = json!({"vhost": vhost, "name": name, "created": created});
    if !print_json_if(ctx.output, &value) {
        if created {
            crate::outln!(
                "declared {} exchange {}",
                body["type"].as_str().unwrap_or(""),
                named(name, vhost)
            );
        } else {
            crate::outln!("exchange {} already exists", named(name, vhost));
        }
    }
    Ok(0)
}

async fn describe(ctx: &Ctx, client: &AdminClient, vhost: &str, name: &str) -> anyhow::Result<i32> {
    let context = format!("describe exchange {}", named(name, vhost));
    let path = exchange_path(vhost, name);
    let mut value = client.get(&context, &path).await?;
    let from = client
        .get(&context, &format!("{path}/bindings/source"))
        .await?;
    let to = client
        .get(&context, &format!("{path}/bindings/destination"))
        .await?;
    value["bindings_as_source"] = from.clone();
    value["bindings_as_destination"] = to.clone();
    if print_json_if(ctx.output, &value) {
        return Ok(0);
    }
    let x: ExchangeInfo = parse(&context, value)?;
    let from: Vec<BindingInfo> = parse(&context, from)?;
    let to: Vec<BindingInfo> = parse(&context, to)?;
    crate::outln!(
        "Exchange: {}  Vhost: {}  Type: {}",
        shown(&x.name),
        x.vhost,
        x.kind
    );
    crate::outln!(
        "  durable: {}  auto-delete: {}  internal: {}  built-in: {}",
        x.durable,
        x.auto_delete,
        x.internal,
        x.builtin
    );
    if let Some(ae) = x.arguments.get("alternate-exchange") {
        crate::outln!("  alternate-exchange: {ae}");
    }
    if from.is_empty() {
        crate::outln!("Routes to: (nothing bound)");
    } else {
        crate::outln!("Routes to:");
        let rows: Vec<Vec<String>> = from
            .iter()
            .map(|b| {
                vec![
                    format!("  {}", b.destination),
                    b.destination_type.clone(),
                    b.routing_key.clone(),
                    binding::arguments_text(&b.arguments),
                ]
            })
            .collect();
        crate::out!(
            "{}",
            render_table(
                &["  DESTINATION", "TYPE", "ROUTING-KEY", "ARGUMENTS"],
                &rows
            )
        );
    }
    if !to.is_empty() {
        crate::outln!("Fed by:");
        let rows: Vec<Vec<String>> = to
            .iter()
            .map(|b| {
                vec![
                    format!("  {}", b.source),
                    b.routing_key.clone(),
                    binding::arguments_text(&b.arguments),
                ]
            })
            .collect();
        crate::out!(
            "{}",
            render_table(&["  EXCHANGE", "ROUTING-KEY", "ARGUMENTS"], &rows)
        );
    }
    Ok(0)
}

async fn delete(
    ctx: &Ctx,
    client: &AdminClient,
    vhost: &str,
    name: &str,
    if_unused: bool,
    if_exists: bool,
) -> anyhow::Result<i32> {
    let context = format!("delete exchange {}", named(name, vhost));
    let path = format!("{}?if-unused={if_unused}", exchange_path(vhost, name));
    let deleted = match client.call(&context, Method::DELETE, &path, None).await {
        Ok(_) => true,
        Err(AdminError::Api { status: 404, .. }) if if_exists => false,
        Err(e) => return Err(e.into()),
    };
    let value = json!({"vhost": vhost, "name": name, "deleted": deleted});
    if !print_json_if(ctx.output, &value) {
        if deleted {
            crate::outln!("deleted exchange {}", named(name, vhost));
        } else {
            crate::outln!("exchange {} does not exist", named(name, vhost));
        }
    }
    Ok(0)
}
