package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseFilters(t *testing.T) {
	p, err := ParsePattern(`orders?status=in.(paid,"a,b","x\"y)",shipped)&total=gt.100&note=is.null&ok=is.true&gone=is.false&name=eq.hello world&x=neq.&d=lte.-0012.50`)
	if err != nil {
		t.Fatal(err)
	}
	if p.Collection != "orders" || p.ID != "" || p.Filters == nil {
		t.Fatalf("pattern %+v", p)
	}
	var got []string
	for _, f := range p.Filters.List {
		s := f.Column + " " + [...]string{"", "eq", "neq", "lt", "lte", "gt", "gte", "in", "is.null", "is.true", "is.false"}[f.Op]
		for _, v := range f.Values {
			s += " [" + v.Text + "|" + v.Num + "]"
		}
		got = append(got, s)
	}
	want := []string{
		`status in [paid|] [a,b|] [x"y)|] [shipped|]`,
		`total gt [100|100]`,
		`note is.null`, `ok is.true`, `gone is.false`,
		`name eq [hello world|]`,
		`x neq [|]`,
		`d lte [-0012.50|-12.5]`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("parsed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// "&" inside a quoted in-list value; "=", "?" in plain values; escapes.
	p2, err := ParsePattern(`p?title=in.("a&b","c\\d","e\"f")&t=eq.a=b?c`)
	if err != nil || len(p2.Filters.List) != 2 || fmt.Sprint(p2.Filters.List[0].Values) != `[{a&b } {c\d } {e"f }]` || p2.Filters.List[1].Values[0].Text != "a=b?c" {
		t.Fatalf("quoted values: %+v, %v", p2.Filters, err)
	}
	if p.Filters.index != 5 {
		t.Errorf("index filter = %d, want 5 (the first eq)", p.Filters.index)
	}
	for filters, want := range map[string]int{
		"a=neq.1&b=is.null":                                  -1,
		"a=neq.1&b=gt.1&c=in.(1,2)":                          2, // a short in before a range
		"a=gt.1&c=in.(" + strings.Repeat("1,", 16) + "2)":    0, // a long in only after a range
		"c=in.(" + strings.Repeat("1,", 16) + "2)&a=is.null": 0,
		"a=lt.1&b=eq.x":                                      1,
	} {
		if fs, err := ParseFilters(filters); err != nil || fs.index != want {
			t.Errorf("ParseFilters(%q).index = %v, %v; want %d", filters, fs, err, want)
		}
	}

	// Canonical names: "posts" and "posts.*" are one, filters stay as written.
	for in, want := range map[string]string{
		"posts?a=eq.1":          "posts.*?a=eq.1",
		"posts.*?a=eq.1":        "posts.*?a=eq.1",
		"posts.7?a=eq.1&b=eq.2": "posts.7?a=eq.1&b=eq.2",
		"posts.*?b=eq.2&a=eq.1": "posts.*?b=eq.2&a=eq.1",
		"posts.a.b?x=eq.y?z":    "posts.a.b?x=eq.y?z",
	} {
		p, err := ParsePattern(in)
		if err != nil || p.String() != want {
			t.Errorf("ParsePattern(%q).String() = %q, %v; want %q", in, p.String(), err, want)
		}
	}
}

func TestParseFiltersErrors(t *testing.T) {
	for topic, wantMsg := range map[string]string{
		"posts?":                     `nothing after "?"`,
		"?a=eq.1":                    `no collection before "?"`,
		"*?a=eq.1":                   `"*" takes no filters`,
		"posts?a":                    `filter 1 ("a"): no "="`,
		"posts?=eq.1":                `no column name`,
		"posts?a=eq.1&":              `ends with "&"`,
		"posts?a=eq.1&b":             `filter 2 ("b"): no "="`,
		"posts?a=like.x":             `unknown operator "like"`,
		"posts?a=eq":                 `operator "eq" must be followed by "." and a value, e.g. a=eq.1`,
		"posts?a=":                   `no operator after "="`,
		"posts?a=1&total=gt":         `filter 1 ("a=1"): operator "1"`,
		"posts?a=eq.1&total=gt":      `filter 2 ("total=gt"): operator "gt" must be followed by "." and a value, e.g. total=gt.1`,
		"posts?a=eq&b=eq.1":          `operator "eq" must be followed by "."`,
		"posts?a=is.maybe":           `"is" takes null, true or false`,
		"posts?a=in.paid":            `in needs a list in parentheses`,
		"posts?a=in.(paid":           `no closing ")"`,
		`posts?a=in.("paid)`:         `no closing '"'`,
		"posts?a=in.(a,,b)":          `empty value in in-list`,
		`posts?a=in.(a"b)`:           `quote the whole value`,
		"posts?a=in.(a)x":            `unexpected "x" after the in-list`,
		`posts?a=in.("a"b)`:          `expected "," or ")"`,
		"posts?a b=eq.1":             `whitespace`,
		"posts?a=eq.\x01":            `control character`,
		"posts?a=eq.x ":              `ends with whitespace`,
		" posts?a=eq.x":              `starts or ends with whitespace`,
		"posts?a=eq.x\n":             `whitespace`,
		"posts?" + nFilters(9):       "at most 8 filters",
		"posts?a=eq.1&b=neq.2&c=x.1": `filter 3 ("c=x.1"): unknown operator "x"`,
	} {
		_, err := ParsePattern(topic)
		if !errors.Is(err, ErrInvalidTopic) || !strings.Contains(err.Error(), wantMsg) {
			t.Errorf("ParsePattern(%q) err = %v; want ErrInvalidTopic containing %q", topic, err, wantMsg)
		}
	}
	if _, err := ParsePattern("posts?" + nFilters(8)); err != nil {
		t.Errorf("8 filters: %v", err)
	}
}

func nFilters(n int) string {
	var fs []string
	for i := 0; i < n; i++ {
		fs = append(fs, "c"+string(rune('a'+i))+"=eq.1")
	}
	return strings.Join(fs, "&")
}

func TestFilterMatch(t *testing.T) {
	row := Row{
		{"id", int64(7)}, {"user_id", "ann"}, {"total", json.Number("100.50")}, {"ratio", 0.25},
		{"code", "0100"}, {"note", nil}, {"ok", true}, {"meta", json.RawMessage(`{"k":1}`)},
		{"tags", []any{"a"}}, {"big", json.Number("123456789012345678901234567890.1")},
		{"status", "a,b"}, {"n32", int32(-3)},
		// jsonb as Postgres writes it (what cdc hands over): spaces after
		// ':' and ','; events carry it compacted, and filters compare that.
		{"doc", json.RawMessage(`{"k": [1, 2], "s": "a b"}`)},
	}
	ev := &Event{Kind: KindRecord, Collection: "posts", Action: ActionUpdate, Record: row}
	cases := map[string]bool{
		"user_id=eq.ann": true, "user_id=eq.bob": false, "user_id=neq.bob": true, "user_id=neq.ann": false,
		"user_id=gt.alice": true, "user_id=lt.b": true, "user_id=gte.ann": true, "user_id=lte.an": false,
		// numbers compare as numbers: 100.50 == 100.5, > 99, < 1000 (not as text)
		"total=eq.100.5": true, "total=eq.100.50000": true, "total=gt.99": true, "total=lt.1000": true,
		"total=gte.100.5": true, "total=lte.100.49": false, "total=eq.abc": false, "total=neq.abc": false,
		"total=gt.1e2": true, "total=lt.-5": false, "n32=lt.-2": true, "n32=gt.-3.5": true, "n32=eq.-3": true,
		"id=eq.7": true, "id=eq.07": true, "id=eq.7.0": true, "id=in.(1,7)": true, "id=in.(1,2)": false,
		"ratio=eq.0.25": true, "ratio=lt.0.3": true, "ratio=gt.0.249999": true,
		"big=gt.123456789012345678901234567890": true, "big=lt.123456789012345678901234567890.11": true,
		// text stays text: "0100" is not 100
		"code=eq.100": false, "code=eq.0100": true, "code=lt.1": true,
		// null matches only is.null
		"note=is.null": true, "note=eq.x": false, "note=neq.x": false, "user_id=is.null": false,
		"ok=is.true": true, "ok=is.false": false, "ok=eq.true": true, "note=is.true": false,
		"meta=eq.{\"k\":1}": true, "tags=eq.a": false, "tags=is.null": false, `doc=eq.{"k":[1,2],"s":"a b"}`: true,
		`status=in.("a,b",c)`: true, "status=in.(a,b)": false,
		// unknown column: never matches, whatever the operator
		"nope=eq.1": false, "nope=neq.1": false, "nope=is.null": false,
		// all filters must hold
		"user_id=eq.ann&id=gt.5": true, "user_id=eq.ann&id=gt.7": false,
	}
	for filter, want := range cases {
		fs, err := ParseFilters(filter)
		if err != nil {
			t.Fatalf("%s: %v", filter, err)
		}
		if got := fs.Match(ev); got != want {
			t.Errorf("%s on the row: %v, want %v", filter, got, want)
		}
	}
}

func TestFilterMatchByAction(t *testing.T) {
	fs, _ := ParseFilters("user_id=eq.ann")
	id, _ := ParseFilters("id=eq.1")
	for _, c := range []struct {
		name    string
		ev      *Event
		fs      *Filters
		matches bool
	}{
		{"create on new row", &Event{Kind: KindRecord, Action: ActionCreate, Record: Row{{"user_id", "ann"}}}, fs, true},
		{"update on new row, not old", &Event{Kind: KindRecord, Action: ActionUpdate, Record: Row{{"user_id", "bob"}}, OldRecord: Row{{"user_id", "ann"}}}, fs, false},
		{"delete on logged key", &Event{Kind: KindRecord, Action: ActionDelete, Record: Row{{"id", int64(1)}}}, id, true},
		{"delete without the column", &Event{Kind: KindRecord, Action: ActionDelete, Record: Row{{"id", int64(1)}}}, fs, false},
		{"delete on old_record", &Event{Kind: KindRecord, Action: ActionDelete, OldRecord: Row{{"user_id", "ann"}}}, fs, true},
		{"truncate always", &Event{Kind: KindRecord, Action: ActionTruncate}, fs, true},
		{"custom on data", &Event{Kind: KindCustom, Data: json.RawMessage(`{"user_id":"ann","n":1}`)}, fs, true},
		{"custom number data", &Event{Kind: KindCustom, Data: json.RawMessage(`{"id":1.0}`)}, id, true},
		{"custom other data", &Event{Kind: KindCustom, Data: json.RawMessage(`{"user_id":"bob"}`)}, fs, false},
		{"custom without data", &Event{Kind: KindCustom}, fs, false},
		{"custom non-object data", &Event{Kind: KindCustom, Data: json.RawMessage(`[1]`)}, fs, false},
	} {
		if got := c.fs.Match(c.ev); got != c.matches {
			t.Errorf("%s: %v, want %v", c.name, got, c.matches)
		}
	}
}

func TestCanonNumber(t *testing.T) {
	for in, want := range map[string]string{
		"0": "0", "-0": "0", "+5": "5", "007": "7", "1.500": "1.5", "-0012.50": "-12.5", ".5": "0.5",
		"5.": "5", "1e3": "1000", "-2.5E-1": "-0.25", "0.000": "0",
	} {
		got, ok := canonNumber(nil, in)
		if !ok || string(got) != want {
			t.Errorf("canonNumber(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "-", ".", "abc", "1a", "NaN", "Infinity", "1e", "0x10", "1e999", "1.2.3"} {
		if got, ok := canonNumber(nil, bad); ok {
			t.Errorf("canonNumber(%q) = %q, want not a number", bad, got)
		}
	}
	for _, c := range []struct {
		a, b string
		want int
	}{{"1", "2", -1}, {"10", "9", 1}, {"-10", "-9", -1}, {"-1", "1", -1}, {"0.5", "0.45", 1}, {"12", "12.5", -1}, {"-12", "-12.5", 1}, {"3.14", "3.14", 0}} {
		if got := compareDecimal([]byte(c.a), c.b); got != c.want {
			t.Errorf("compareDecimal(%s, %s) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

// TestFilterMatchDoesNotAllocate: evaluation on typed column values is
// free of allocations (the fan-out runs it under the broker's lock).
func TestFilterMatchDoesNotAllocate(t *testing.T) {
	fs, _ := ParseFilters("user_id=eq.ann&total=gt.99.5&ratio=lt.1&ok=is.true&id=in.(1,2,7)")
	row := Row{{"id", int64(7)}, {"user_id", "ann"}, {"total", json.Number("100.50")}, {"ratio", 0.25}, {"ok", true}}
	if n := testing.AllocsPerRun(100, func() {
		if !fs.matchRow(row) {
			t.Fatal("no match")
		}
	}); n != 0 {
		t.Errorf("%v allocations per match, want 0", n)
	}
}

// FuzzParsePattern: any topic either parses or is an invalid_topic error;
// a parsed topic's canonical name parses to itself; matching never panics.
func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"posts", "posts.*?a=eq.1", `o?s=in.(a,"b,c")&t=gt.1e3`, "p.1?x=is.null", "p?a=in.(", `p?a=in.("\`, "p?a=lt.-0.5&b=neq."} {
		f.Add(s)
	}
	events := []*Event{
		{Kind: KindRecord, Action: ActionUpdate, Record: Row{{"a", int64(1)}, {"s", "b,c"}, {"t", json.Number("1000.5")}, {"x", nil}, {"b", 2.5}}},
		{Kind: KindRecord, Action: ActionDelete, OldRecord: Row{{"a", "1"}}},
		{Kind: KindCustom, Data: json.RawMessage(`{"a":1,"s":"x","t":[1],"x":null,"b":true}`)},
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidTopic) {
				t.Fatalf("%q: error %v does not wrap ErrInvalidTopic", s, err)
			}
			return
		}
		// ("posts" may grow past the length limit as "posts.*": the
		// canonical name is a key, never parsed again.)
		if q, err := ParsePattern(p.String()); len(p.String()) <= MaxPatternLen && (err != nil || q.String() != p.String()) {
			t.Fatalf("%q: canonical %q parses to %q, %v", s, p.String(), q.String(), err)
		}
		if p.Filters != nil && len(p.Filters.List) > MaxFilters {
			t.Fatalf("%q: %d filters", s, len(p.Filters.List))
		}
		for _, ev := range events {
			p.Filters.Match(ev)
		}
	})
}
