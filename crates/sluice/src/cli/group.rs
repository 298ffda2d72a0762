//! `sluice group list|describe|reset-offsets|delete`.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, ListGroupsRequest,
    describe_groups_response::DescribedGroup,
};
use serde_json::json;

use super::Ctx;
use super::args::{GroupCommand, ResetOffsetsArgs};
use super::exit::usage;
use super::output::{print_json_if, print_table};
use kafka_client::consumer_group::{Offsets, commit_offsets, fetch_offsets};
use kafka_client::group_protocol::decode_assignment;
use kafka_client::ops::{list_offsets, topic_partitions, watermarks};
use kafka_client::{Client, ClientError, group_id};

const GROUP_ID_NOT_FOUND: i16 = 69;
const NON_EMPTY_GROUP: i16 = 68;

pub async fn run(ctx: &Ctx, cmd: GroupCommand) -> anyhow::Result<i32> {
    let mut client = ctx.client().await?;
    match cmd {
        GroupCommand::List => list(ctx, &mut client).await,
        GroupCommand::Describe { group } => describe(ctx, &mut client, &group).await,
        GroupCommand::ResetOffsets(args) => reset_offsets(ctx, &mut client, args).await,
        GroupCommand::Delete { groups } => delete(ctx, &mut client, &groups).await,
    }
}

async fn list(ctx: &Ctx, client: &mut Client) -> anyhow::Result<i32> {
    let mut groups: BTreeMap<String, (String, String)> = BTreeMap::new();
    // Groups live on their coordinators: ask every broker.
    let nodes: Vec<i32> = client.brokers().keys().copied().collect();
    let targets: Vec<Option<i32>> = if nodes.is_empty() {
        vec![None]
    } else {
        nodes.into_iter().map(Some).collect()
    };
    for node in targets {
        let conn = match node {
            Some(n) => client.node(n).await?,
            None => client.any().await?,
        };
        let (response, _) = conn.send(&ListGroupsRequest::default()).await?;
        if response.error_code != 0 {
            return Err(ClientError::broker("list groups", response.error_code, None).into());
        }
        for g in response.groups {
            groups.insert(
                g.group_id.0.to_string(),
                (g.group_state.to_string(), g.protocol_type.to_string()),
            );
        }
    }
    let value = json!(
        groups
            .iter()
            .map(|(g, (state, proto))| json!({"group": g, "state": state, "protocol_type": proto}))
            .collect::<Vec<_>>()
    );
    if !print_json_if(ctx.output, &value) {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|(g, (state, proto))| vec![g.clone(), state.clone(), proto.clone()])
            .collect();
        print_table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows);
        if rows.is_empty() {
            eprintln!("no consumer groups yet; `sluice consume TOPIC --group NAME` creates one");
        }
    }
    Ok(0)
}

async fn describe_group(client: &mut Client, group: &str) -> anyhow::Result<DescribedGroup> {
    let mut request = DescribeGroupsRequest::default();
    request.groups = vec![group_id(group)];
    let (response, _) = client.coordinator(group).await?.send(&request).await?;
    let described = response
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("DescribeGroups returned no group"))?;
    if described.error_code != 0 {
        return Err(ClientError::broker(
            format!("describe group {group}"),
            described.error_code,
            described.error_message.as_ref().map(|m| m.to_string()),
        )
        .into());
    }
    Ok(described)
}

/// Committed offset, log end offset and lag per partition, for every topic the group has
/// offsets for or is assigned.
struct LagRow {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    end: i64,
    member: Option<String>,
}

async fn describe(ctx: &Ctx, client: &mut Client, group: &str) -> anyhow::Result<i32> {
    let described = describe_group(client, group).await?;
    let committed = fetch_offsets(client, group, None).await?;
    let state = described.group_state.to_string();
    if (state == "Dead" || state.is_empty()) && committed.is_empty() {
        return Err(ClientError::broker(
            format!("group {group}"),
            GROUP_ID_NOT_FOUND,
            Some("the group does not exist".to_string()),
        )
        .into());
    }
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    let mut members = Vec::new();
    for m in &described.members {
        let assignment = decode_assignment(m.member_assignment.clone()).unwrap_or_default();
        for (t, ps) in &assignment {
            for p in ps {
                owner.insert((t.clone(), *p), m.member_id.to_string());
            }
        }
        members.push(json!({
            "member_id": m.member_id.to_string(),
            "client_id": m.client_id.to_string(),
            "host": m.client_host.to_string(),
            "assignment": assignment,
        }));
    }
    let topics: BTreeSet<String> = committed
        .keys()
        .map(|(t, _)| t.clone())
        .chain(owner.keys().map(|(t, _)| t.clone()))
        .collect();
    let mut rows = Vec::new();
    for topic in &topics {
        let partitions = topic_partitions(client, topic).await?;
        let marks = watermarks(client, topic, &partitions).await?;
        for p in &partitions {
            let key = (topic.clone(), p.partition);
            if !committed.contains_key(&key) && !owner.contains_key(&key) {
                continue;
            }
            rows.push(LagRow {
                topic: topic.clone(),
                partition: p.partition,
                committed: committed.get(&key).copied(),
                end: marks.get(&p.partition).map_or(0, |m| m.1),
                member: owner.get(&key).cloned(),
            });
        }
    }
    // Like kafka-consumer-groups: partitions with no committed offset have no lag ("-").
    let total_lag: i64 = rows
        .iter()
        .filter_map(|r| r.committed.map(|c| (r.end - c).max(0)))
        .sum();
    let value = json!({
        "group": group,
        "state": state,
        "protocol_type": described.protocol_type.to_string(),
        "protocol": described.protocol_data.to_string(),
        "members": members,
        "total_lag": total_lag,
        "partitions": rows.iter().map(|r| json!({
            "topic": r.topic,
            "partition": r.partition,
            "committed_offset": r.committed,
            "log_end_offset": r.end,
            "lag": r.committed.map(|c| (r.end - c).max(0)),
            "member_id": r.member,
        })).collect::<Vec<_>>(),
    });
    if print_json_if(ctx.output, &value) {
        return Ok(0);
    }
    print_description(group, &state, &described, &rows, total_lag);
    Ok(0)
}

/// The human form of `group describe`: a lag table per partition, then the members.
fn print_description(
    group: &str,
    state: &str,
    described: &DescribedGroup,
    rows: &[LagRow],
    total_lag: i64,
) {
    crate::outln!(
        "Group: {group}  State: {state}  Members: {}  Total lag: {total_lag}",
        described.members.len()
    );
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.topic.clone(),
                r.partition.to_string(),
                r.committed.map_or("-".into(), |c| c.to_string()),
                r.end.to_string(),
                r.committed
                    .map_or("-".into(), |c| (r.end - c).max(0).to_string()),
                r.member.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(
        &[
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "MEMBER-ID",
        ],
        &table,
    );
    if !described.members.is_empty() {
        crate::outln!();
        let members: Vec<Vec<String>> = described
            .members
            .iter()
            .map(|m| {
                let assigned = decode_assignment(m.member_assignment.clone())
                    .unwrap_or_default()
                    .iter()
                    .map(|(t, ps)| {
                        let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
                        format!("{t}:{}", ps.join(","))
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                vec![
                    m.member_id.to_string(),
                    m.client_id.to_string(),
                    m.client_host.to_string(),
                    assigned,
                ]
            })
            .collect();
        print_table(&["MEMBER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"], &members);
    }
}

/// Milliseconds since the epoch from `1700000000000` or an RFC 3339 time such as
/// `2026-11-21T12:00:00Z`, `2026-11-21T12:00:00.5+01:00` or `2026-11-21`.
pub fn parse_datetime(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let (date, rest) = match s.split_once(['T', ' ']) {
        Some((d, r)) => (d, r),
        None => (s, "00:00:00Z"),
    };
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Split off the zone: Z, +HH:MM or -HH:MM (none: UTC).
    let (time, offset_min) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(pos) = rest.rfind(['+', '-']) {
        let (t, z) = rest.split_at(pos);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (h, m) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
        (
            t,
            sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?),
        )
    } else {
        (rest, 0)
    };
    let mut t = time.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next().unwrap_or("0").parse().ok()?;
    let sec_str = t.next().unwrap_or("0");
    let (sec, frac) = sec_str.split_once('.').unwrap_or((sec_str, ""));
    let sec: i64 = sec.parse().ok()?;
    let millis: i64 = if frac.is_empty() {
        0
    } else {
        format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

async fn reset_offsets(
    ctx: &Ctx,
    client: &mut Client,
    args: ResetOffsetsArgs,
) -> anyhow::Result<i32> {
    let group = args.group.as_str();
    let described = describe_group(client, group).await?;
    if args.execute && !described.members.is_empty() {
        return Err(ClientError::broker(
            format!("reset offsets of group {group}"),
            NON_EMPTY_GROUP,
            Some(format!(
                "the group is {} with {} member(s)",
                described.group_state,
                described.members.len()
            )),
        )
        .into());
    }
    let current = fetch_offsets(client, group, None).await?;
    let topics: Vec<String> = if args.topics.is_empty() {
        current
            .keys()
            .map(|(t, _)| t.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    } else {
        args.topics.clone()
    };
    if topics.is_empty() {
        return Err(usage(format!(
            "group {group} has no committed offsets; name the topic(s) with --topic"
        )));
    }
    let datetime = match &args.to_datetime {
        Some(s) => Some(parse_datetime(s).ok_or_else(|| {
            usage(format!(
                "--to-datetime `{s}`: use RFC 3339 like 2026-11-21T12:00:00Z or milliseconds since epoch"
            ))
        })?),
        None => None,
    };
    let mut planned = Offsets::new();
    for topic in &topics {
        let partitions = topic_partitions(client, topic).await?;
        let marks = watermarks(client, topic, &partitions).await?;
        let targets: BTreeMap<i32, i64> = if args.to_earliest {
            marks.iter().map(|(p, m)| (*p, m.0)).collect()
        } else if args.to_latest {
            marks.iter().map(|(p, m)| (*p, m.1)).collect()
        } else if let Some(o) = args.to_offset {
            marks.iter().map(|(p, m)| (*p, o.clamp(m.0, m.1))).collect()
        } else if let Some(ts) = datetime {
            let found = list_offsets(client, topic, &partitions, |_| ts).await?;
            marks
                .iter()
                .map(|(p, m)| (*p, found.get(p).copied().flatten().map_or(m.1, |x| x.0)))
                .collect()
        } else {
            return Err(usage(
                "give one of --to-earliest, --to-latest, --to-datetime, --to-offset",
            ));
        };
        for (p, o) in targets {
            planned.insert((topic.clone(), p), o);
        }
    }
    if args.execute {
        commit_offsets(client, group, -1, "", &planned).await?;
    }
    let value = json!({
        "group": group,
        "executed": args.execute,
        "partitions": planned.iter().map(|((t, p), o)| json!({
            "topic": t,
            "partition": p,
            "current_offset": current.get(&(t.clone(), *p)),
            "new_offset": o,
        })).collect::<Vec<_>>(),
    });
    if !print_json_if(ctx.output, &value) {
        let rows: Vec<Vec<String>> = planned
            .iter()
            .map(|((t, p), o)| {
                vec![
                    t.clone(),
                    p.to_string(),
                    current
                        .get(&(t.clone(), *p))
                        .map_or("-".into(), |c| c.to_string()),
                    o.to_string(),
                ]
            })
            .collect();
        print_table(
            &["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
            &rows,
        );
        if args.execute {
            crate::outln!("offsets of group {group} reset");
        } else {
            crate::outln!("dry run: nothing changed; add --execute to apply");
        }
    }
    Ok(0)
}

async fn delete(ctx: &Ctx, client: &mut Client, groups: &[String]) -> anyhow::Result<i32> {
    let mut deleted = Vec::new();
    let mut first_error = None;
    for group in groups {
        let mut request = DeleteGroupsRequest::default();
        request.groups_names = vec![group_id(group)];
        let (response, _) = client.coordinator(group).await?.send(&request).await?;
        for r in response.results {
            if r.error_code == 0 {
                deleted.push(r.group_id.0.to_string());
            } else if first_error.is_none() {
                first_error = Some(ClientError::broker(
                    format!("delete group {}", r.group_id.0),
                    r.error_code,
                    None,
                ));
            }
        }
    }
    let value = json!({"deleted": deleted});
    if !print_json_if(ctx.output, &value) {
        for g in &deleted {
            crate::outln!("deleted group {g}");
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_datetime;

    #[test]
    fn datetimes_parse() {
        assert_eq!(parse_datetime("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_datetime("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_datetime("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000_500)
        );
        assert_eq!(parse_datetime("2023-11-14"), Some(1_699_920_000_000));
        assert_eq!(parse_datetime("yesterday"), None);
    }
}
