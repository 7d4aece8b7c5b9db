//! The page's CSV download, in the competition's submission format:
//! `id,Category,len,attr_1,...,attr_10`, with every slot after `len` holding the
//! placeholder the grader accepts.

use model_core::taxonomy::MAX_ATTRIBUTES;

/// What fills the slots after a category's `len` attributes (the grader accepted it).
pub const DUMMY_VALUE: &str = "dummy_value";

/// One tagged photo: its id, category and labels in `attr_1..attr_N` order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub category: String,
    pub labels: Vec<String>,
}

/// The submission id of a photo file: the Meesho files are `<id, zero-padded>.jpg`, so a
/// numeric stem becomes that number; any other name keeps its stem.
pub fn id_from_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let stem = match base.rfind('.') {
        Some(dot) if dot > 0 => &base[..dot],
        _ => base,
    };
    match stem.parse::<u64>() {
        Ok(n) if stem.bytes().all(|b| b.is_ascii_digit()) => n.to_string(),
        _ => stem.to_string(),
    }
}

/// The CSV text (header and one line per row, `\n` line ends).
pub fn to_csv(rows: &[Row]) -> String {
    let mut out = String::from("id,Category,len");
    for k in 1..=MAX_ATTRIBUTES {
        out.push_str(&format!(",attr_{k}"));
    }
    out.push('\n');
    for row in rows {
        let mut cells = vec![
            field(&row.id),
            field(&row.category),
            row.labels.len().to_string(),
        ];
        cells.extend(row.labels.iter().take(MAX_ATTRIBUTES).map(|l| field(l)));
        while cells.len() < 3 + MAX_ATTRIBUTES {
            cells.push(DUMMY_VALUE.to_string());
        }
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// One CSV field, quoted when it holds a comma, a quote or a line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_file_names_become_ids() {
        assert_eq!(id_from_file_name("000123.jpg"), "123");
        assert_eq!(id_from_file_name("dir/000000.jpeg"), "0");
        assert_eq!(id_from_file_name("red shirt.png"), "red shirt");
        assert_eq!(id_from_file_name(".hidden"), ".hidden");
        assert_eq!(id_from_file_name("+12.jpg"), "+12");
    }

    #[test]
    fn rows_fill_the_unused_slots_with_the_placeholder() {
        let csv = to_csv(&[Row {
            id: "7".into(),
            category: "Men Tshirts".into(),
            labels: ["white", "round", "printed", "typography", "short sleeves"]
                .map(String::from)
                .to_vec(),
        }]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "id,Category,len,attr_1,attr_2,attr_3,attr_4,attr_5,attr_6,attr_7,attr_8,attr_9,attr_10"
        );
        assert_eq!(
            lines[1],
            "7,Men Tshirts,5,white,round,printed,typography,short sleeves,\
             dummy_value,dummy_value,dummy_value,dummy_value,dummy_value"
        );
        assert_eq!(lines[1].split(',').count(), 13);
    }

    #[test]
    fn awkward_fields_are_quoted() {
        let csv = to_csv(&[Row {
            id: "a,b".into(),
            category: "Women Tops & Tunics".into(),
            labels: vec!["say \"hi\"".into()],
        }]);
        assert!(csv.contains("\"a,b\",Women Tops & Tunics,1,\"say \"\"hi\"\"\","));
    }
}
