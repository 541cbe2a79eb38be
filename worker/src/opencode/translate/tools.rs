//! A tool call's part: its status, input, output and end as chunks, and a
//! completed edit or write as a file edit.

use serde_json::Value;
use tether_domain::protocol::{ChunkBody, ToolStatus};

use super::{Effects, ToolPart};

pub(super) fn tool_status(s: &str) -> ToolStatus {
    match s {
        "running" => ToolStatus::Running,
        "completed" => ToolStatus::Completed,
        "error" => ToolStatus::Error,
        _ => ToolStatus::Pending,
    }
}

pub(super) fn on_tool(part_id: &str, tool: &mut ToolPart, part: &Value, fx: &mut Effects) {
    if tool.finished {
        return;
    }
    let state = &part["state"];
    let status = tool_status(state["status"].as_str().unwrap_or("pending"));
    tool.call_id = part["callID"].as_str().unwrap_or_default().to_owned();
    tool.tool = part["tool"].as_str().unwrap_or_default().to_owned();
    let input = state["input"].clone();
    let title = state["title"].as_str().map(str::to_owned);
    let changed = tool.status != Some(status) || tool.input != input || tool.title != title;
    if changed && !(status == ToolStatus::Pending && input.as_object().is_none_or(|o| o.is_empty()) && tool.status.is_some()) {
        tool.status = Some(status);
        tool.input = input.clone();
        tool.title = title.clone();
        fx.chunks.push(ChunkBody::ToolCall {
            part_id: part_id.to_owned(),
            call_id: tool.call_id.clone(),
            tool: tool.tool.clone(),
            status,
            input,
            title,
        });
    }
    // Output streams in `metadata.output` while running and lands in
    // `output` when completed.
    let output = match status {
        ToolStatus::Completed => state["output"].as_str(),
        _ => state["metadata"]["output"].as_str(),
    };
    if let Some(out) = output {
        if out.len() > tool.output_sent.len() && out.starts_with(tool.output_sent.as_str()) {
            let rest = out[tool.output_sent.len()..].to_owned();
            tool.output_sent.push_str(&rest);
            fx.chunks.push(ChunkBody::ToolOutput {
                part_id: part_id.to_owned(),
                call_id: tool.call_id.clone(),
                delta: rest,
            });
        }
    }
    if matches!(status, ToolStatus::Completed | ToolStatus::Error) {
        tool.finished = true;
        if let Some(edit) = file_edit(&tool.tool, state) {
            fx.chunks.push(edit);
        }
        fx.chunks.push(ChunkBody::ToolResult {
            part_id: part_id.to_owned(),
            call_id: tool.call_id.clone(),
            status,
            error: state["error"].as_str().map(str::to_owned),
            metadata: state["metadata"].clone(),
        });
    }
}

/// A completed edit or write becomes a file edit with its diff.
fn file_edit(tool: &str, state: &Value) -> Option<ChunkBody> {
    if state["status"].as_str() != Some("completed") {
        return None;
    }
    let meta = &state["metadata"];
    let input = &state["input"];
    let path = meta["filediff"]["file"]
        .as_str()
        .or_else(|| meta["filepath"].as_str())
        .or_else(|| input["filePath"].as_str())
        .or_else(|| input["path"].as_str())?
        .to_owned();
    match tool {
        "edit" | "write" | "patch" | "multiedit" => {}
        _ => return None,
    }
    let diff = meta["diff"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            // A new file: its whole content as additions.
            input["content"].as_str().map(|c| {
                let lines: Vec<String> = c.lines().map(|l| format!("+{l}")).collect();
                format!("--- /dev/null\n+++ {path}\n@@ -0,0 +1,{} @@\n{}\n", lines.len(), lines.join("\n"))
            })
        })?;
    let additions = meta["filediff"]["additions"]
        .as_u64()
        .unwrap_or_else(|| diff.lines().filter(|l| l.starts_with('+') && !l.starts_with("+++")).count() as u64) as u32;
    let deletions = meta["filediff"]["deletions"]
        .as_u64()
        .unwrap_or_else(|| diff.lines().filter(|l| l.starts_with('-') && !l.starts_with("---")).count() as u64) as u32;
    Some(ChunkBody::FileEdit {
        path,
        diff,
        additions,
        deletions,
    })
}
