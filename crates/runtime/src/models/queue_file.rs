//! The download queue as stored in `<root>/config/downloads.json`: the app's own format with a
//! version, separate from the window's transfer types, so that renaming a field the window sees
//! does not lose anyone's interrupted downloads.
//!
//! Bytes done are not stored (they change many times a second): on loading, they are read back
//! from the finished files and the `.part` files on disk, which is what a resume continues from.

use crate::download;
pub use crate::stored::model::{Kind, Source};
use ipc::models::DownloadState;
use ipc::{ErrorCode, IpcError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub const FORMAT: u32 = 1;
pub const FILE_NAME: &str = "downloads.json";

/// Finished rows kept until the user clears them; older ones are dropped first.
pub const KEEP_FINISHED: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueFile {
    pub format: u32,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    pub state: RowState,
    pub source: Source,
    /// The id the model is registered under when done (reserved at enqueue).
    pub model_id: String,
    /// A folder made for this model (shards, components).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    pub tasks: Vec<Task>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Only for finished rows (the files may be gone since).
    #[serde(default)]
    pub done_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StoredError>,
    /// Set when the model was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<String>,
}

/// Queued and running rows are stored as `waiting`: after a restart they are paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    Waiting,
    Paused,
    Failed,
    Done,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub role: String,
    pub source: Source,
    pub dest: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default)]
    pub preexisting: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<TaskDone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredError {
    /// The stable code (`DOWNLOAD_FAILED`, `AUTH_REQUIRED`, ...).
    pub code: String,
    pub title: String,
    pub message: String,
    pub remedy: String,
}

impl From<&IpcError> for StoredError {
    fn from(e: &IpcError) -> Self {
        Self {
            code: e.code.as_str().to_owned(),
            title: e.title.clone(),
            message: e.message.clone(),
            remedy: e.remedy.clone(),
        }
    }
}

impl From<&StoredError> for IpcError {
    fn from(e: &StoredError) -> Self {
        let code = ErrorCode::parse(&e.code).unwrap_or(ErrorCode::DownloadFailed);
        let mut out = IpcError::new(code, e.message.clone()).with_remedy(e.remedy.clone());
        out.title = e.title.clone();
        out
    }
}

/// How a stored row shows after a restart: whatever was waiting or running is paused.
pub fn restored_state(s: RowState) -> DownloadState {
    match s {
        RowState::Waiting | RowState::Paused => DownloadState::Paused,
        RowState::Failed => DownloadState::Failed,
        RowState::Done => DownloadState::Done,
    }
}

pub fn stored_state(s: DownloadState) -> RowState {
    match s {
        DownloadState::Queued | DownloadState::Running => RowState::Waiting,
        DownloadState::Paused => RowState::Paused,
        DownloadState::Failed => RowState::Failed,
        DownloadState::Done => RowState::Done,
    }
}

/// The bytes an unfinished row holds on disk now: its finished files plus each `.part`.
pub fn bytes_on_disk(tasks: &[Task]) -> u64 {
    tasks
        .iter()
        .map(|t| match &t.done {
            Some(d) => d.bytes,
            None => std::fs::metadata(download::part_path(&t.dest)).map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Keeps every unfinished row and the newest [`KEEP_FINISHED`] finished ones, in order.
pub fn trim_finished(rows: &mut Vec<Row>) {
    let finished = rows.iter().filter(|r| r.state == RowState::Done).count();
    let mut drop = finished.saturating_sub(KEEP_FINISHED);
    rows.retain(|r| {
        if drop > 0 && r.state == RowState::Done {
            drop -= 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored::Conv;
    use ipc::models::ModelSource;

    #[test]
    fn states_after_a_restart() {
        let cases = [
            (DownloadState::Queued, RowState::Waiting, DownloadState::Paused),
            (DownloadState::Running, RowState::Waiting, DownloadState::Paused),
            (DownloadState::Paused, RowState::Paused, DownloadState::Paused),
            (DownloadState::Failed, RowState::Failed, DownloadState::Failed),
            (DownloadState::Done, RowState::Done, DownloadState::Done),
        ];
        for (live, stored, back) in cases {
            assert_eq!(stored_state(live), stored, "{live:?}");
            assert_eq!(restored_state(stored), back, "{live:?}");
        }
    }

    #[test]
    fn errors_keep_their_code_and_remedy() {
        let e = IpcError::new(ErrorCode::AuthRequired, "401 from the repo").with_remedy("accept");
        let back = IpcError::from(&StoredError::from(&e));
        assert_eq!(back, e);
        let unknown = StoredError {
            code: "SOMETHING_NEW".into(),
            title: "t".into(),
            message: "m".into(),
            remedy: "r".into(),
        };
        assert_eq!(IpcError::from(&unknown).code, ErrorCode::DownloadFailed);
    }

    fn row(id: &str, state: RowState) -> Row {
        Row {
            id: id.into(),
            name: id.into(),
            kind: Kind::Llm,
            state,
            source: Source::Url { url: "http://127.0.0.1/x.gguf".into() },
            model_id: id.into(),
            dir: None,
            tasks: vec![],
            total_bytes: None,
            done_bytes: 0,
            error: None,
            registered: None,
        }
    }

    #[test]
    fn only_the_oldest_finished_rows_are_dropped() {
        let mut rows: Vec<Row> =
            (0..KEEP_FINISHED + 3).map(|i| row(&format!("d{i}"), RowState::Done)).collect();
        rows.insert(1, row("p", RowState::Paused));
        rows.push(row("f", RowState::Failed));
        trim_finished(&mut rows);
        assert_eq!(rows.len(), KEEP_FINISHED + 2);
        assert_eq!(rows[0].id, "p", "unfinished rows stay");
        assert_eq!(rows[1].id, "d3", "d0..d2 were the oldest finished");
        assert_eq!(rows.last().unwrap().id, "f");
    }

    /// The format as version 1 wrote it: a change that breaks reading it fails here.
    #[test]
    fn a_format_1_file_reads_back() {
        let json = r#"{"format":1,"rows":[{"id":"dl-4","name":"Tiny","kind":"llm","state":"waiting",
            "source":{"type":"hugging_face","repo":"o/r","file":"m.gguf","revision":"main"},
            "model_id":"tiny","tasks":[{"role":"model","source":{"type":"url","url":"http://h/m.gguf"},
            "dest":"/s/models/llm/tiny.gguf","sha256":"ab","preexisting":false,
            "done":{"sha256":"ab","bytes":5},"size":5}],"total_bytes":5,"done_bytes":0,
            "error":{"code":"NETWORK","title":"Network error","message":"m","remedy":"r"}}]}"#;
        let f: QueueFile = serde_json::from_str(json).unwrap();
        let r = &f.rows[0];
        assert_eq!(restored_state(r.state), DownloadState::Paused);
        assert_eq!(
            Conv::<ModelSource>::conv(&r.source),
            ModelSource::HuggingFace {
                repo: "o/r".into(),
                file: "m.gguf".into(),
                revision: "main".into()
            }
        );
        assert_eq!(r.tasks[0].done, Some(TaskDone { sha256: Some("ab".into()), bytes: 5 }));
        assert_eq!(IpcError::from(r.error.as_ref().unwrap()).code, ErrorCode::Network);
        assert_eq!(bytes_on_disk(&r.tasks), 5);
    }
}
