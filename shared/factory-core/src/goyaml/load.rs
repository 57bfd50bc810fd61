//! Loads the first YAML document of a body into a small node tree with line numbers, keeping each
//! scalar's exact text and style (go-yaml decides types from those, not from a parsed value).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A node of the loaded document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    /// 1-based line where the node starts.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Scalar {
        value: String,
        /// True for plain scalars: only those are typed implicitly.
        plain: bool,
        /// The explicit tag, normalised to its short form (`!!str`) when it is a core tag.
        tag: Option<String>,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// Why a body could not be loaded as YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The body has no YAML document (empty, or only comments). Go says `EOF`.
    #[error("EOF")]
    Empty,
    #[error("yaml: line {line}: {message}")]
    Syntax { line: usize, message: String },
}

/// Parses `text` and returns the first document's root node; later documents are not read, as
/// go-yaml's `Decoder.Decode` reads one document.
pub fn load_first_document(text: &str) -> Result<Node, LoadError> {
    let mut builder = Builder {
        source: text,
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        // yaml-rust2 reads ahead; an error after a complete first document is not Go's concern.
        if builder.root.is_none() || !builder.document_done {
            let message = e.info().to_owned();
            return Err(LoadError::Syntax {
                line: e.marker().line(),
                message,
            });
        }
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    builder.root.ok_or(LoadError::Empty)
}

#[derive(Debug, Default)]
struct Builder<'s> {
    source: &'s str,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    document_done: bool,
    error: Option<LoadError>,
}

#[derive(Debug)]
struct Frame {
    line: usize,
    anchor: usize,
    is_map: bool,
    items: Vec<Node>,
}

impl Builder<'_> {
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            Some(frame) => frame.items.push(node),
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
        }
    }
}

impl Builder<'_> {
    /// Whether the block scalar header at char index `at` (`|`, `>-`, `|2+`, ...) has the keep
    /// chomping indicator.
    fn keeps_trailing_breaks(&self, at: usize) -> bool {
        self.source
            .chars()
            .skip(at)
            .skip_while(|c| *c != '|' && *c != '>')
            .skip(1)
            .take_while(|c| c.is_ascii_digit() || *c == '+' || *c == '-')
            .any(|c| c == '+')
    }
}

fn short_tag(tag: &Tag) -> String {
    const CORE: &str = "tag:yaml.org,2002:";
    if tag.handle == "!!" || tag.handle == CORE {
        format!("!!{}", tag.suffix)
    } else if let Some(rest) = tag.suffix.strip_prefix(CORE) {
        format!("!!{rest}")
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.document_done {
            return;
        }
        let line = mark.line();
        match ev {
            Event::Scalar(mut value, style, anchor, tag) => {
                if matches!(style, TScalarStyle::Literal | TScalarStyle::Folded)
                    && value.chars().all(|c| c == '\n')
                    && !self.keeps_trailing_breaks(mark.index())
                {
                    // A block scalar with no content is "" unless its header says "keep" (`|+`);
                    // yaml-rust2 hands out "\n" for `|` there.
                    value.clear();
                }
                let node = Node {
                    kind: NodeKind::Scalar {
                        value,
                        plain: style == TScalarStyle::Plain,
                        tag: tag.as_ref().map(short_tag),
                    },
                    line,
                };
                self.push_node(node, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame {
                line,
                anchor,
                is_map: false,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame {
                line,
                anchor,
                is_map: true,
                items: Vec::new(),
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else { return };
                let kind = if frame.is_map {
                    let mut pairs = Vec::with_capacity(frame.items.len() / 2);
                    let mut it = frame.items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    NodeKind::Map(pairs)
                } else {
                    NodeKind::Seq(frame.items)
                };
                self.push_node(
                    Node {
                        kind,
                        line: frame.line,
                    },
                    frame.anchor,
                );
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    let node = node.clone();
                    self.push_node(node, 0);
                }
                None => {
                    self.error.get_or_insert(LoadError::Syntax {
                        line,
                        message: "unknown anchor".into(),
                    });
                }
            },
            Event::DocumentEnd => self.document_done = self.root.is_some() || self.stack.is_empty(),
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_comment_only_bodies_are_eof() {
        assert_eq!(load_first_document(""), Err(LoadError::Empty));
        assert_eq!(load_first_document("# just a comment\n"), Err(LoadError::Empty));
    }

    #[test]
    fn keeps_scalar_text_style_and_lines() {
        let root = load_first_document("a: 1.20\nb: '1.20'\n").expect("loads");
        let NodeKind::Map(pairs) = root.kind else {
            panic!("not a map")
        };
        assert_eq!(pairs[1].0.line, 2);
        assert!(matches!(&pairs[0].1.kind, NodeKind::Scalar { value, plain: true, .. } if value == "1.20"));
        assert!(matches!(&pairs[1].1.kind, NodeKind::Scalar { plain: false, .. }));
    }

    #[test]
    fn empty_block_scalars_follow_their_chomping() {
        let scalar = |text: &str| match load_first_document(text).expect("loads").kind {
            NodeKind::Map(pairs) => match &pairs[0].1.kind {
                NodeKind::Scalar { value, .. } => value.clone(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        assert_eq!(scalar("a: |\n"), "");
        assert_eq!(scalar("a: >-\n"), "");
        assert_eq!(scalar("a: |\n  x\n"), "x\n");
    }

    #[test]
    fn only_the_first_document_is_read() {
        let root = load_first_document("a: 1\n---\n[").expect("loads");
        assert!(matches!(root.kind, NodeKind::Map(_)));
    }
}
