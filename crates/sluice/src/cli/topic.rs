//! `sluice topic create|list|describe|alter|delete`.

use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest,
    create_partitions_request::CreatePartitionsTopic,
    create_topics_request::{CreatableTopic, CreatableTopicConfig},
    describe_configs_request::DescribeConfigsResource,
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
};
use serde_json::json;

use super::args::TopicCommand;
use super::output::{print_json_if, print_table};
use super::{Ctx, parse_kv};
use kafka_client::ops::{partitions_in, watermarks};
use kafka_client::{Client, ClientError, str_bytes, topic_name};

const TOPIC_RESOURCE: i8 = 2;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
/// DescribeConfigs config_source values that mean "set on this topic".
const SOURCE_TOPIC: i8 = 1;

pub async fn run(ctx: &Ctx, cmd: TopicCommand) -> anyhow::Result<i32> {
    let mut client = ctx.client().await?;
    match cmd {
        TopicCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            create(
                ctx,
                &mut client,
                &topic,
                partitions,
                replication_factor,
                &configs,
                if_not_exists,
            )
            .await
        }
        TopicCommand::List { internal } => list(ctx, &mut client, internal).await,
        TopicCommand::Describe { topics } => describe(ctx, &mut client, &topics).await,
        TopicCommand::Alter {
            topic,
            partitions,
            configs,
            delete_configs,
        } => {
            alter(
                ctx,
                &mut client,
                &topic,
                partitions,
                &configs,
                &delete_configs,
            )
            .await
        }
        TopicCommand::Delete { topics, if_exists } => {
            delete(ctx, &mut client, &topics, if_exists).await
        }
    }
}

async fn create(
    ctx: &Ctx,
    client: &mut Client,
    topic: &str,
    partitions: Option<i32>,
    replication_factor: Option<i16>,
    configs: &[String],
    if_not_exists: bool,
) -> anyhow::Result<i32> {
    let mut t = CreatableTopic::default();
    t.name = topic_name(topic);
    t.num_partitions = partitions.unwrap_or(-1);
    t.replication_factor = replication_factor.unwrap_or(-1);
    for c in configs {
        let (k, v) = parse_kv(c, "--config")?;
        let mut cfg = CreatableTopicConfig::default();
        cfg.name = str_bytes(&k);
        cfg.value = Some(str_bytes(&v));
        t.configs.push(cfg);
    }
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![t];
    request.timeout_ms = ctx.timeout.as_millis().min(i32::MAX as u128) as i32;
    let (response, _) = client.controller().await?.send(&request).await?;
    let result = response
        .topics
        .first()
        .ok_or_else(|| anyhow::anyhow!("CreateTopics returned no result"))?;
    let existed = result.error_code == 36;
    if result.error_code != 0 && !(existed && if_not_exists) {
        return Err(ClientError::broker(
            format!("create topic {topic}"),
            result.error_code,
            result.error_message.as_ref().map(|m| m.to_string()),
        )
        .into());
    }
    let value = json!({
        "topic": topic,
        "created": !existed,
        "partitions": if existed { None } else { Some(result.num_partitions) },
    });
    if !print_json_if(ctx.output, &value) {
        if existed {
            crate::outln!("topic {topic} already exists");
        } else if result.num_partitions > 0 {
            crate::outln!(
                "created topic {topic} with {} partition{}",
                result.num_partitions,
                if result.num_partitions == 1 { "" } else { "s" }
            );
        } else {
            crate::outln!("created topic {topic}");
        }
    }
    Ok(0)
}

async fn list(ctx: &Ctx, client: &mut Client, internal: bool) -> anyhow::Result<i32> {
    let md = client.metadata(None, false).await?;
    let mut topics: Vec<(String, usize, bool)> = md
        .topics
        .iter()
        .filter(|t| internal || !t.is_internal)
        .filter_map(|t| {
            t.name
                .as_ref()
                .map(|n| (n.0.to_string(), t.partitions.len(), t.is_internal))
        })
        .collect();
    topics.sort();
    let value = json!(
        topics
            .iter()
            .map(|(n, p, i)| json!({"topic": n, "partitions": p, "internal": i}))
            .collect::<Vec<_>>()
    );
    if !print_json_if(ctx.output, &value) {
        let rows: Vec<Vec<String>> = topics
            .iter()
            .map(|(n, p, _)| vec![n.clone(), p.to_string()])
            .collect();
        print_table(&["TOPIC", "PARTITIONS"], &rows);
        if rows.is_empty() {
            eprintln!("no topics yet; create one with `sluice topic create NAME`");
        }
    }
    Ok(0)
}

async fn describe(ctx: &Ctx, client: &mut Client, topics: &[String]) -> anyhow::Result<i32> {
    let md = client.metadata(Some(topics), false).await?;
    let mut out = Vec::new();
    for topic in topics {
        let partitions = partitions_in(&md, topic)?;
        let marks = watermarks(client, topic, &partitions).await?;
        let configs = describe_configs(client, topic).await?;
        let replicas = replica_sets(&md, topic);
        out.push(json!({
            "topic": topic,
            "partitions": partitions.iter().map(|p| {
                let (start, end) = marks.get(&p.partition).copied().unwrap_or((0, 0));
                json!({
                    "partition": p.partition,
                    "leader": p.leader,
                    "replicas": replicas.get(&p.partition).map(|r| r.0.clone()).unwrap_or_default(),
                    "isr": replicas.get(&p.partition).map(|r| r.1.clone()).unwrap_or_default(),
                    "log_start_offset": start,
                    "log_end_offset": end,
                    "records": end - start,
                })
            }).collect::<Vec<_>>(),
            "configs": configs.iter().map(|(k, v, set)| json!({"name": k, "value": v, "overridden": set})).collect::<Vec<_>>(),
        }));
    }
    let value = if out.len() == 1 {
        out[0].clone()
    } else {
        json!(out)
    };
    if print_json_if(ctx.output, &value) {
        return Ok(0);
    }
    for t in &out {
        let parts = t["partitions"].as_array().cloned().unwrap_or_default();
        crate::outln!(
            "Topic: {}  Partitions: {}",
            t["topic"].as_str().unwrap_or(""),
            parts.len()
        );
        let rows: Vec<Vec<String>> = parts
            .iter()
            .map(|p| {
                let ids = |k: &str| {
                    p[k].as_array()
                        .map(|a| {
                            a.iter()
                                .map(|v| v.to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default()
                };
                vec![
                    p["partition"].to_string(),
                    p["leader"].to_string(),
                    ids("replicas"),
                    ids("isr"),
                    p["log_start_offset"].to_string(),
                    p["log_end_offset"].to_string(),
                    p["records"].to_string(),
                ]
            })
            .collect();
        print_table(
            &[
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "ISR",
                "START-OFFSET",
                "END-OFFSET",
                "RECORDS",
            ],
            &rows,
        );
        let overridden: Vec<Vec<String>> = t["configs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|c| c["overridden"].as_bool() == Some(true))
            .map(|c| {
                vec![
                    c["name"].as_str().unwrap_or("").to_string(),
                    c["value"].as_str().unwrap_or("").to_string(),
                ]
            })
            .collect();
        if overridden.is_empty() {
            crate::outln!("Configs: (all defaults)");
        } else {
            crate::outln!("Configs:");
            print_table(&["CONFIG", "VALUE"], &overridden);
        }
        crate::outln!();
    }
    Ok(0)
}

/// partition → (replica ids, in-sync replica ids), from metadata.
fn replica_sets(
    md: &kafka_protocol::messages::MetadataResponse,
    topic: &str,
) -> std::collections::BTreeMap<i32, (Vec<i32>, Vec<i32>)> {
    md.topics
        .iter()
        .filter(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            (
                p.partition_index,
                (
                    p.replica_nodes.iter().map(|b| b.0).collect(),
                    p.isr_nodes.iter().map(|b| b.0).collect(),
                ),
            )
        })
        .collect()
}

/// `(name, value, overridden on the topic)` of every config the broker reports.
async fn describe_configs(
    client: &mut Client,
    topic: &str,
) -> anyhow::Result<Vec<(String, Option<String>, bool)>> {
    let mut request = DescribeConfigsRequest::default();
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = TOPIC_RESOURCE;
    resource.resource_name = str_bytes(topic);
    resource.configuration_keys = None;
    request.resources = vec![resource];
    let conn = client.any().await?;
    if conn.version_of::<DescribeConfigsRequest>().is_err() {
        return Ok(Vec::new()); // a broker without DescribeConfigs: show partitions only
    }
    let (response, _) = conn.send(&request).await?;
    let mut out = Vec::new();
    for r in response.results {
        if r.error_code != 0 {
            return Err(ClientError::broker(
                format!("describe configs of {topic}"),
                r.error_code,
                r.error_message.map(|m| m.to_string()),
            )
            .into());
        }
        for c in r.configs {
            out.push((
                c.name.to_string(),
                c.value.map(|v| v.to_string()),
                c.config_source == SOURCE_TOPIC,
            ));
        }
    }
    out.sort();
    Ok(out)
}

async fn alter(
    ctx: &Ctx,
    client: &mut Client,
    topic: &str,
    partitions: Option<i32>,
    configs: &[String],
    delete_configs: &[String],
) -> anyhow::Result<i32> {
    if partitions.is_none() && configs.is_empty() && delete_configs.is_empty() {
        return Err(super::exit::usage(
            "nothing to change: give --partitions N, --config KEY=VALUE or --delete-config KEY",
        ));
    }
    let mut changed = Vec::new();
    if let Some(count) = partitions {
        let mut t = CreatePartitionsTopic::default();
        t.name = topic_name(topic);
        t.count = count;
        t.assignments = None;
        let mut request = CreatePartitionsRequest::default();
        request.topics = vec![t];
        request.timeout_ms = 30_000;
        let (response, _) = client.controller().await?.send(&request).await?;
        for r in response.results {
            if r.error_code != 0 {
                return Err(ClientError::broker(
                    format!("set partitions of {topic} to {count}"),
                    r.error_code,
                    r.error_message.map(|m| m.to_string()),
                )
                .into());
            }
        }
        changed.push(format!("partitions={count}"));
    }
    if !configs.is_empty() || !delete_configs.is_empty() {
        let mut resource = AlterConfigsResource::default();
        resource.resource_type = TOPIC_RESOURCE;
        resource.resource_name = str_bytes(topic);
        for c in configs {
            let (k, v) = parse_kv(c, "--config")?;
            let mut a = AlterableConfig::default();
            a.name = str_bytes(&k);
            a.config_operation = OP_SET;
            a.value = Some(str_bytes(&v));
            resource.configs.push(a);
            changed.push(format!("{k}={v}"));
        }
        for k in delete_configs {
            let mut a = AlterableConfig::default();
            a.name = str_bytes(k);
            a.config_operation = OP_DELETE;
            a.value = None;
            resource.configs.push(a);
            changed.push(format!("{k} (default)"));
        }
        let mut request = IncrementalAlterConfigsRequest::default();
        request.resources = vec![resource];
        let (response, _) = client.controller().await?.send(&request).await?;
        for r in response.responses {
            if r.error_code != 0 {
                return Err(ClientError::broker(
                    format!("alter configs of {topic}"),
                    r.error_code,
                    r.error_message.map(|m| m.to_string()),
                )
                .into());
            }
        }
    }
    let value = json!({"topic": topic, "changed": changed});
    if !print_json_if(ctx.output, &value) {
        crate::outln!("altered topic {topic}: {}", changed.join(", "));
    }
    Ok(0)
}

async fn delete(
    ctx: &Ctx,
    client: &mut Client,
    topics: &[String],
    if_exists: bool,
) -> anyhow::Result<i32> {
    let mut request = DeleteTopicsRequest::default();
    request.topic_names = topics.iter().map(|t| topic_name(t)).collect();
    request.timeout_ms = 30_000;
    let (response, _) = client.controller().await?.send(&request).await?;
    let mut deleted = Vec::new();
    let mut first_error = None;
    for r in response.responses {
        let name = r.name.map(|n| n.0.to_string()).unwrap_or_default();
        match r.error_code {
            0 => deleted.push(name),
            3 if if_exists => {}
            code => {
                if first_error.is_none() {
                    first_error = Some(ClientError::broker(
                        format!("delete topic {name}"),
                        code,
                        r.error_message.map(|m| m.to_string()),
                    ));
                }
            }
        }
    }
    let value = json!({"deleted": deleted});
    if !print_json_if(ctx.output, &value) {
        for t in &deleted {
            crate::outln!("deleted topic {t}");
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(0),
    }
}
