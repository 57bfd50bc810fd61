//! A stack CloudFormation deployed (`scripts/deploy-localstack` on LocalStack, typically with
//! `Deploy=storage`): its name, ID and the physical IDs of its resources, so that the local stack
//! runs the functions against the bucket and queues it created instead of creating its own, and
//! the secrets its template references, read from Secrets Manager.

use std::collections::BTreeMap;

use aws_config::SdkConfig;

use crate::Error;

/// What [`describe`] found.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub name: String,
    pub id: String,
    pub status: String,
    /// Logical ID → physical ID (bucket name, queue URL, ...) of every resource that has one.
    pub physical: BTreeMap<String, String>,
}

/// The stack `stack` (name or ID), which must have been created or updated successfully.
pub async fn describe(sdk: &SdkConfig, stack: &str) -> Result<Deployed, Error> {
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let stacks = cfn
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| Error::Setup(format!("CloudFormation stack {stack}: {}", error_text(&e))))?;
    let found = stacks
        .stacks()
        .first()
        .ok_or_else(|| Error::Setup(format!("CloudFormation stack {stack}: not found")))?;
    let status = found
        .stack_status()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    if !matches!(
        status.as_str(),
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "UPDATE_ROLLBACK_COMPLETE"
    ) {
        return Err(Error::Setup(format!(
            "CloudFormation stack {stack} is {status}, not deployed"
        )));
    }
    let id = found.stack_id().unwrap_or(stack).to_owned();
    let mut physical = BTreeMap::new();
    let mut token = None;
    loop {
        let page = cfn
            .list_stack_resources()
            .stack_name(&id)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| Error::Setup(format!("resources of stack {stack}: {}", error_text(&e))))?;
        for r in page.stack_resource_summaries() {
            if let (Some(logical), Some(physical_id)) = (r.logical_resource_id(), r.physical_resource_id()) {
                if !physical_id.is_empty() && physical_id != "unknown" {
                    physical.insert(logical.to_owned(), physical_id.to_owned());
                }
            }
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok(Deployed {
        name: found.stack_name().unwrap_or(stack).to_owned(),
        id,
        status,
        physical,
    })
}

/// The SecretString of the secret `id` (name or ARN).
pub async fn secret(sdk: &SdkConfig, id: &str) -> Result<String, Error> {
    let secrets = aws_sdk_secretsmanager::Client::new(sdk);
    let value = secrets
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| Error::Setup(format!("secret {id}: {}", error_text(&e))))?;
    value
        .secret_string()
        .map(str::to_owned)
        .ok_or_else(|| Error::Setup(format!("secret {id} has no SecretString")))
}

fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
