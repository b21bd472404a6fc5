//! The report as a PDF: A4 landscape in the built-in Helvetica (no font embedded),
//! a title, then the relays and the sender identities as tables, one line per row.
//! Text outside Windows-1252 prints as `?`; a cell too wide for the page is cut
//! and ends with `…`.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use super::{COLUMNS, cells, sections};
use crate::plugin::Row;

const PAGE_W: f32 = 841.89;
const PAGE_H: f32 = 595.28;
const MARGIN: f32 = 28.0;
/// Table font sizes: the largest that fits the page, never below the smallest.
const MAX_SIZE: f32 = 7.5;
const MIN_SIZE: f32 = 5.0;
/// Space between columns, in em.
const GAP_EM: f32 = 2.0;
/// Longest cell before the page width has a say.
const MAX_CELL: usize = 48;
const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// Helvetica's advance widths of ' ' to '~' (1/1000 em, from its AFM file).
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];

/// Windows-1252 (the base fonts' WinAnsiEncoding) bytes of `text`; `?` for the rest.
pub fn win_ansi(text: &str) -> Vec<u8> {
    const HIGH: [(char, u8); 27] = [
        ('€', 0x80),
        ('‚', 0x82),
        ('ƒ', 0x83),
        ('„', 0x84),
        ('…', 0x85),
        ('†', 0x86),
        ('‡', 0x87),
        ('ˆ', 0x88),
        ('‰', 0x89),
        ('Š', 0x8a),
        ('‹', 0x8b),
        ('Œ', 0x8c),
        ('Ž', 0x8e),
        ('‘', 0x91),
        ('’', 0x92),
        ('“', 0x93),
        ('”', 0x94),
        ('•', 0x95),
        ('–', 0x96),
        ('—', 0x97),
        ('˜', 0x98),
        ('™', 0x99),
        ('š', 0x9a),
        ('›', 0x9b),
        ('œ', 0x9c),
        ('ž', 0x9e),
        ('Ÿ', 0x9f),
    ];
    text.chars()
        .map(|c| match u32::from(c) {
            0x20..=0x7e | 0xa0..=0xff => u8::try_from(u32::from(c)).unwrap_or(b'?'),
            _ => HIGH.iter().find(|(h, _)| *h == c).map_or(b'?', |(_, b)| *b),
        })
        .collect()
}

/// Width of Windows-1252 text in em (characters past ASCII count as 556).
fn width_em(text: &[u8]) -> f32 {
    let units: u32 = text
        .iter()
        .map(|b| {
            b.checked_sub(0x20)
                .and_then(|i| HELVETICA.get(usize::from(i)))
                .map_or(556, |w| u32::from(*w))
        })
        .sum();
    units as f32 / 1000.0
}

/// Every table line of the document (header first), cut to fit the page, with
/// the font size and column positions to print them at.
struct Layout {
    size: f32,
    x: Vec<f32>,
}

fn layout(lines: &mut [Vec<String>]) -> Layout {
    let columns = COLUMNS.len();
    let avail = PAGE_W - 2.0 * MARGIN;
    let mut caps = vec![MAX_CELL; columns];
    loop {
        let widths: Vec<f32> = (0..columns)
            .map(|c| {
                lines
                    .iter()
                    .map(|l| width_em(&win_ansi(&crate::table::clip(&l[c], caps[c]))) * 1.1)
                    .fold(0.0, f32::max)
            })
            .collect();
        let total = widths.iter().sum::<f32>() + GAP_EM * (columns - 1) as f32;
        let size = (avail / total).min(MAX_SIZE);
        let widest = (0..columns).max_by(|a, b| widths[*a].total_cmp(&widths[*b]));
        match widest {
            Some(w) if size < MIN_SIZE && caps[w] > 6 => {
                let longest = lines.iter().map(|l| l[w].chars().count()).max();
                caps[w] = longest
                    .unwrap_or(caps[w])
                    .min(caps[w])
                    .saturating_sub(2)
                    .max(6);
            }
            _ => {
                for line in lines.iter_mut() {
                    for (cell, cap) in line.iter_mut().zip(&caps) {
                        *cell = crate::table::clip(cell, *cap);
                    }
                }
                let mut x = Vec::with_capacity(columns);
                let mut at = MARGIN;
                for w in &widths {
                    x.push(at);
                    at += (w + GAP_EM) * size;
                }
                return Layout { size, x };
            }
        }
    }
}

/// Pages as content streams, started and filled top to bottom.
struct Pages {
    done: Vec<Content>,
    page: Content,
    y: f32,
}

impl Pages {
    fn text(&mut self, font: Name<'_>, size: f32, x: f32, text: &str) {
        self.page
            .begin_text()
            .set_font(font, size)
            .next_line(x, self.y)
            .show(Str(&win_ansi(text)))
            .end_text();
    }

    fn break_if_below(&mut self, needed: f32) -> bool {
        if self.y - needed >= MARGIN {
            return false;
        }
        self.done
            .push(std::mem::replace(&mut self.page, Content::new()));
        self.y = PAGE_H - MARGIN;
        true
    }

    fn row(&mut self, l: &Layout, font: Name<'_>, cells: &[String]) {
        self.y -= l.size * 1.5;
        for (cell, x) in cells.iter().zip(&l.x) {
            let shown = if cell.is_empty() { "-" } else { cell.as_str() };
            self.text(font, l.size, *x, shown);
        }
    }

    fn header(&mut self, l: &Layout, header: &[String]) {
        self.row(l, BOLD, header);
        let y = self.y - l.size * 0.4;
        self.page
            .set_line_width(0.5)
            .move_to(MARGIN, y)
            .line_to(PAGE_W - MARGIN, y)
            .stroke();
    }
}

/// The PDF's bytes. `generated` (e.g. the export time) is printed under the title.
pub fn to_pdf(rows: &[Row], generated: &str) -> Vec<u8> {
    let parts = sections(rows);
    let mut lines: Vec<Vec<String>> = vec![COLUMNS.iter().map(|c| c.to_string()).collect()];
    for (_, part) in &parts {
        lines.extend(
            part.iter()
                .map(|r| cells(r).iter().map(|c| c.text()).collect()),
        );
    }
    let l = layout(&mut lines);
    let mut table = lines.into_iter();
    let header = table.next().unwrap_or_default();
    let mut pages = Pages {
        done: Vec::new(),
        page: Content::new(),
        y: PAGE_H - MARGIN - 14.0,
    };
    pages.text(BOLD, 14.0, MARGIN, "SMTP relays and sender identities");
    pages.y -= 14.0;
    let summary = format!(
        "Exported {generated}: {} relays, {} sender identities",
        parts[0].1.len(),
        parts[1].1.len()
    );
    pages.text(REGULAR, 8.0, MARGIN, &summary);
    for (title, part) in &parts {
        pages.break_if_below(30.0 + 3.0 * l.size * 1.5);
        pages.y -= 22.0;
        pages.text(BOLD, 11.0, MARGIN, title);
        pages.header(&l, &header);
        if part.is_empty() {
            pages.y -= l.size * 1.5;
            pages.text(REGULAR, l.size, MARGIN, "(none)");
        }
        for cells in table.by_ref().take(part.len()) {
            if pages.break_if_below(l.size * 1.5) {
                pages.header(&l, &header);
            }
            pages.row(&l, REGULAR, &cells);
        }
    }
    pages.done.push(pages.page);
    write(pages.done)
}

fn write(contents: Vec<Content>) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let n = contents.len();
    let page_ids: Vec<Ref> = (0..n).map(|i| Ref::new(6 + 2 * i as i32)).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().copied())
        .count(i32::try_from(n).unwrap_or(i32::MAX));
    for (font, id) in [
        (b"Helvetica".as_slice(), regular),
        (b"Helvetica-Bold", bold),
    ] {
        pdf.type1_font(id)
            .base_font(Name(font))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.document_info(info)
        .title(TextStr("SMTP relays and sender identities"))
        .producer(TextStr("smtp-relay-operator"));
    for (i, (mut content, page_id)) in contents.into_iter().zip(&page_ids).enumerate() {
        let footer = format!("Page {} of {n}", i + 1);
        content
            .begin_text()
            .set_font(REGULAR, 7.0)
            .next_line(
                PAGE_W - MARGIN - width_em(footer.as_bytes()) * 7.0,
                MARGIN / 2.0,
            )
            .show(Str(footer.as_bytes()))
            .end_text();
        let content_id = Ref::new(page_id.get() + 1);
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H))
            .parent(tree)
            .contents(content_id);
        page.resources()
            .fonts()
            .pair(REGULAR, regular)
            .pair(BOLD, bold);
        page.finish();
        pdf.stream(content_id, &content.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_windows_1252_or_a_question_mark() {
        assert_eq!(win_ansi("Ab 1"), b"Ab 1");
        assert_eq!(win_ansi("é€…"), vec![0xe9, 0x80, 0x85]);
        assert_eq!(win_ansi("日\n\u{7f}"), b"???");
        assert!((width_em(b"ID") - 1.0).abs() < 1e-6, "I 278 + D 722");
    }

    #[test]
    fn a_huge_cell_is_cut_to_fit_the_page() {
        let mut lines = vec![
            COLUMNS.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            COLUMNS.iter().map(|_| "x".repeat(500)).collect(),
        ];
        let l = layout(&mut lines);
        assert!(l.size >= MIN_SIZE, "{}", l.size);
        assert!(lines[1].iter().all(|c| c.chars().count() <= MAX_CELL));
        let right =
            l.x.last().copied().unwrap_or(0.0) + width_em(&win_ansi(&lines[1][15])) * 1.1 * l.size;
        assert!(right <= PAGE_W - MARGIN + 0.5, "{right}");
    }
}
