//! DescribeConfigs, AlterConfigs, IncrementalAlterConfigs. Topic configs are editable;
//! broker configs are described read-only.

use broker::{ConfigEntry, ConfigOp};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use crate::context::{Ctx, s};
use crate::errors::{NONE, error_code};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Kafka's source of a value: the topic's own override, a broker setting changed from its
/// default, or the built-in default.
fn entry_result(e: ConfigEntry, broker_level: bool) -> DescribeConfigsResourceResult {
    let source = if e.is_override && !broker_level {
        SOURCE_TOPIC
    } else if e.broker_set {
        SOURCE_STATIC_BROKER
    } else {
        SOURCE_DEFAULT
    };
    DescribeConfigsResourceResult::default()
        .with_name(s(e.name))
        .with_value(e.value.map(s))
        .with_read_only(e.read_only)
        .with_config_source(source)
        .with_is_sensitive(e.sensitive)
}

pub fn describe(ctx: &Ctx<'_>, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let b = ctx.broker;
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let keys: Option<Vec<String>> = r
                .configuration_keys
                .map(|ks| ks.iter().map(|k| k.to_string()).collect());
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                RESOURCE_TOPIC => match b.describe_topic_configs(&r.resource_name, keys.as_deref())
                {
                    Ok(entries) => base.with_error_code(NONE).with_configs(
                        entries
                            .into_iter()
                            .map(|e| entry_result(e, false))
                            .collect(),
                    ),
                    Err(e) => base
                        .with_error_code(error_code(&e))
                        .with_error_message(Some(s(e.to_string()))),
                },
                RESOURCE_BROKER => {
                    let coordinators = ctx.coord.describe_configs().into_iter().map(|(k, v)| {
                        broker::ConfigEntry {
                            name: k.to_string(),
                            value: Some(v),
                            is_override: false,
                            broker_set: false,
                            read_only: true,
                            sensitive: false,
                        }
                    });
                    let entries = b
                        .describe_broker_configs()
                        .into_iter()
                        .chain(coordinators)
                        .filter(|e| keys.as_ref().is_none_or(|ks| ks.contains(&e.name)))
                        .map(|e| entry_result(e, true))
                        .collect();
                    base.with_error_code(NONE).with_configs(entries)
                }
                other => base
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(s(format!("unsupported resource type {other}")))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn alter_one(
    ctx: &Ctx<'_>,
    resource_type: i8,
    name: &str,
    ops: Result<Vec<ConfigOp>, String>,
    incremental: bool,
    validate_only: bool,
) -> (i16, Option<String>) {
    if resource_type != RESOURCE_TOPIC {
        return (
            ResponseError::InvalidRequest.code(),
            Some("only topic configs can be altered".into()),
        );
    }
    let ops = match ops {
        Ok(o) => o,
        Err(msg) => return (ResponseError::InvalidConfig.code(), Some(msg)),
    };
    match ctx
        .broker
        .alter_topic_configs(name, &ops, incremental, validate_only)
    {
        Ok(()) => (NONE, None),
        Err(e) => (error_code(&e), Some(e.to_string())),
    }
}

pub fn alter(ctx: &Ctx<'_>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let ops = Ok(r
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| ConfigOp::Set(c.name.to_string(), v.to_string()))
                })
                .collect());
            let (code, msg) = alter_one(
                ctx,
                r.resource_type,
                &r.resource_name,
                ops,
                false,
                req.validate_only,
            );
            AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(msg.map(s))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

pub fn incremental_alter(
    ctx: &Ctx<'_>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let ops: Result<Vec<ConfigOp>, String> = r
                .configs
                .iter()
                .map(|c| {
                    let name = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                    match c.config_operation {
                        0 => Ok(ConfigOp::Set(name, value)),
                        1 => Ok(ConfigOp::Delete(name)),
                        2 => Ok(ConfigOp::Append(name, value)),
                        3 => Ok(ConfigOp::Subtract(name, value)),
                        op => Err(format!("unknown config operation {op}")),
                    }
                })
                .collect();
            let (code, msg) = alter_one(
                ctx,
                r.resource_type,
                &r.resource_name,
                ops,
                true,
                req.validate_only,
            );
            IncResponse::default()
                .with_error_code(code)
                .with_error_message(msg.map(s))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
