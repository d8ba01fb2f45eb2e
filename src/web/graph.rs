//! The step graph of a workflow run, laid out for an inline SVG: a pure function of the steps
//! and their `needs`.
//!
//! Steps flow left to right. A step's column is the length of the longest chain of `needs`
//! leading to it (the steps that start at once are in column 0), so every edge points right.
//! Within a column, steps are ordered by the mean row of the steps they need (one barycentre
//! sweep, ties kept in the job's order), which untangles the usual fan-out/fan-in shapes; each
//! column is centred on the tallest.

/// Size of a node and the gaps between them, in SVG user units.
pub const NODE_W: u32 = 172;
pub const NODE_H: u32 = 46;
const GAP_X: u32 = 56;
const GAP_Y: u32 = 18;
const PAD: u32 = 8;
/// Characters of a step's name shown in its box (the full name is in its tooltip).
const NAME_CHARS: usize = 20;

/// A step as the graph needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepIn {
    pub name: String,
    pub kind: String,
    pub state: String,
    /// Indices (into the same list) of the steps it needs.
    pub needs: Vec<usize>,
}

/// A placed step.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    /// The name as drawn (shortened when long).
    pub label: String,
    pub kind: String,
    pub state: String,
    pub column: u32,
    pub row: u32,
    pub x: u32,
    pub y: u32,
    /// Where the text baselines go.
    pub text_x: u32,
    pub name_y: u32,
    pub state_y: u32,
}

/// An edge, as an SVG path from the right side of `from` to the left side of `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub path: String,
    /// The state of the step it leads from (edges out of finished steps are drawn solid).
    pub from_state: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub width: u32,
    pub height: u32,
    pub node_w: u32,
    pub node_h: u32,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// The column of every step: 0 for a step that needs nothing, else one more than the largest
/// column among its needs. Needs out of range are ignored; a cycle (which `validate` refuses)
/// is cut where it closes rather than looping.
pub fn columns(steps: &[StepIn]) -> Vec<u32> {
    fn visit(i: usize, steps: &[StepIn], memo: &mut [Option<u32>], on_path: &mut [bool]) -> u32 {
        if let Some(c) = memo[i] {
            return c;
        }
        on_path[i] = true;
        let mut col = 0;
        for &n in &steps[i].needs {
            if n < steps.len() && !on_path[n] {
                col = col.max(visit(n, steps, memo, on_path) + 1);
            }
        }
        on_path[i] = false;
        memo[i] = Some(col);
        col
    }
    let mut memo = vec![None; steps.len()];
    let mut on_path = vec![false; steps.len()];
    (0..steps.len())
        .map(|i| visit(i, steps, &mut memo, &mut on_path))
        .collect()
}

/// Lays the steps out.
pub fn layout(steps: &[StepIn]) -> Graph {
    let cols = columns(steps);
    let ncols = cols.iter().max().map_or(0, |m| m + 1) as usize;
    // Each column's steps, in the job's order to begin with.
    let mut grid: Vec<Vec<usize>> = vec![Vec::new(); ncols];
    for (i, &c) in cols.iter().enumerate() {
        grid[c as usize].push(i);
    }
    let mut row = vec![0usize; steps.len()];
    for column in &grid {
        for (r, &i) in column.iter().enumerate() {
            row[i] = r;
        }
    }
    // One sweep left to right: order each column by the mean row of what it needs.
    for column in grid.iter_mut().skip(1) {
        let key = |i: usize| -> f64 {
            let rows: Vec<f64> = steps[i]
                .needs
                .iter()
                .filter(|&&n| n < steps.len())
                .map(|&n| row[n] as f64)
                .collect();
            if rows.is_empty() {
                row[i] as f64
            } else {
                rows.iter().sum::<f64>() / rows.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = column.iter().map(|&i| (key(i), i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        *column = keyed.into_iter().map(|(_, i)| i).collect();
        for (r, &i) in column.iter().enumerate() {
            row[i] = r;
        }
    }
    let tallest = grid.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let pitch_y = NODE_H + GAP_Y;
    let nodes: Vec<Node> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let c = cols[i];
            let in_column = grid[c as usize].len() as u32;
            // Centre the column on the tallest one (half pitches keep it on whole units).
            let offset = (tallest - in_column) * pitch_y / 2;
            let x = PAD + c * (NODE_W + GAP_X);
            let y = PAD + offset + row[i] as u32 * pitch_y;
            Node {
                name: s.name.clone(),
                label: shorten(&s.name, NAME_CHARS),
                kind: s.kind.clone(),
                state: s.state.clone(),
                column: c,
                row: row[i] as u32,
                x,
                y,
                text_x: x + 12,
                name_y: y + 20,
                state_y: y + 37,
            }
        })
        .collect();
    let mut edges = Vec::new();
    for (to, s) in steps.iter().enumerate() {
        for &from in &s.needs {
            if from >= steps.len() || cols[from] >= cols[to] {
                continue;
            }
            let (a, b) = (&nodes[from], &nodes[to]);
            let (x1, y1) = (a.x + NODE_W, a.y + NODE_H / 2);
            let (x2, y2) = (b.x, b.y + NODE_H / 2);
            let bend = (x2 - x1) / 2;
            edges.push(Edge {
                from,
                to,
                path: format!(
                    "M{x1} {y1} C{} {y1} {} {y2} {x2} {y2}",
                    x1 + bend,
                    x2 - bend
                ),
                from_state: a.state.clone(),
            });
        }
    }
    Graph {
        width: 2 * PAD + ncols as u32 * NODE_W + ncols.saturating_sub(1) as u32 * GAP_X,
        height: 2 * PAD + tallest * NODE_H + tallest.saturating_sub(1) * GAP_Y,
        node_w: NODE_W,
        node_h: NODE_H,
        nodes,
        edges,
    }
}

/// `name`, cut to `n` characters with an ellipsis.
fn shorten(name: &str, n: usize) -> String {
    if name.chars().count() <= n {
        name.to_string()
    } else {
        let mut s: String = name.chars().take(n - 1).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(spec: &[(&str, &[usize])]) -> Vec<StepIn> {
        spec.iter()
            .map(|(n, needs)| StepIn {
                name: n.to_string(),
                kind: "run".into(),
                state: "pending".into(),
                needs: needs.to_vec(),
            })
            .collect()
    }

    fn overlaps(a: &Node, b: &Node) -> bool {
        a.x < b.x + NODE_W && b.x < a.x + NODE_W && a.y < b.y + NODE_H && b.y < a.y + NODE_H
    }

    #[test]
    fn a_chain_is_one_row() {
        let g = layout(&steps(&[("a", &[]), ("b", &[0]), ("c", &[1])]));
        assert_eq!(
            g.nodes.iter().map(|n| n.column).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(g.nodes.iter().all(|n| n.y == g.nodes[0].y));
        assert_eq!(g.edges.len(), 2);
        assert_eq!(g.height, 2 * PAD + NODE_H);
        assert_eq!(g.width, 2 * PAD + 3 * NODE_W + 2 * GAP_X);
    }

    #[test]
    fn the_example_workflow_fans_out_and_joins() {
        // fetch_user → charge → {receipt, record} → later → approve → follow_up
        let g = layout(&steps(&[
            ("fetch_user", &[]),
            ("charge", &[0]),
            ("receipt", &[1]),
            ("record", &[1]),
            ("later", &[2, 3]),
            ("approve", &[4]),
            ("follow_up", &[5]),
        ]));
        let cols: Vec<u32> = g.nodes.iter().map(|n| n.column).collect();
        assert_eq!(cols, [0, 1, 2, 2, 3, 4, 5]);
        // The two parallel steps share a column, one above the other, and the join sits
        // between them.
        let (r, d) = (&g.nodes[2], &g.nodes[3]);
        assert_eq!(r.x, d.x);
        assert!(r.y < d.y);
        let mid = (r.y + d.y) / 2;
        assert_eq!(g.nodes[4].y, mid);
        for (i, a) in g.nodes.iter().enumerate() {
            for b in &g.nodes[i + 1..] {
                assert!(!overlaps(a, b), "{} overlaps {}", a.name, b.name);
            }
            assert!(a.x + NODE_W <= g.width && a.y + NODE_H <= g.height);
        }
        assert_eq!(g.edges.len(), 7);
    }

    #[test]
    fn every_edge_points_right_and_joins_the_node_sides() {
        let s = steps(&[
            ("a", &[]),
            ("b", &[]),
            ("c", &[0, 1]),
            ("d", &[0]),
            ("e", &[2, 3]),
        ]);
        let g = layout(&s);
        for e in &g.edges {
            let (a, b) = (&g.nodes[e.from], &g.nodes[e.to]);
            assert!(a.column < b.column);
            let start = format!("M{} {} ", a.x + NODE_W, a.y + NODE_H / 2);
            let end = format!(" {} {}", b.x, b.y + NODE_H / 2);
            assert!(e.path.starts_with(&start), "{}", e.path);
            assert!(e.path.ends_with(&end), "{}", e.path);
        }
    }

    #[test]
    fn columns_follow_the_longest_chain_whatever_the_listing_order() {
        // `last` is listed first but needs the others; `mid` needs `first` only.
        let s = steps(&[("last", &[1, 2]), ("first", &[]), ("mid", &[1])]);
        assert_eq!(columns(&s), [2, 0, 1]);
    }

    #[test]
    fn barycentre_orders_a_column_after_what_it_needs() {
        // Column 0: a, b. Column 1 lists `under_b` before `under_a`; they swap so the edges do
        // not cross.
        let s = steps(&[("a", &[]), ("b", &[]), ("under_b", &[1]), ("under_a", &[0])]);
        let g = layout(&s);
        assert!(g.nodes[3].y < g.nodes[2].y);
    }

    #[test]
    fn a_cycle_or_a_bad_index_does_not_hang_or_panic() {
        let s = steps(&[("a", &[1]), ("b", &[0]), ("c", &[7])]);
        let g = layout(&s);
        assert_eq!(g.nodes.len(), 3);
        assert!(g.edges.iter().all(|e| e.from < 3 && e.to < 3));
    }

    #[test]
    fn no_steps_no_graph() {
        let g = layout(&[]);
        assert!(g.nodes.is_empty() && g.edges.is_empty());
        assert_eq!((g.width, g.height), (2 * PAD, 2 * PAD));
    }

    #[test]
    fn long_names_are_shortened_for_the_box_only() {
        let g = layout(&steps(&[("a_very_long_step_name_indeed", &[])]));
        assert_eq!(g.nodes[0].name, "a_very_long_step_name_indeed");
        assert_eq!(g.nodes[0].label.chars().count(), NAME_CHARS);
        assert!(g.nodes[0].label.ends_with('…'));
    }
}
