package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Load reads the file at path and returns it as Parse does. A relative
// [abusix] api_key_file is taken relative to the file's directory.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	l := loader{dir: filepath.Dir(path), getenv: os.Getenv}
	return l.parse(data, path)
}

// Parse decodes TOML data on top of Default, rejects unknown keys, adds the
// Abusix lists when a key is configured, and validates the result. Every
// problem is reported at once in an *Errors; source names the data in
// those messages. The environment variable EnvAbusixKey is read when the
// data sets no Abusix key.
func Parse(data []byte, source string) (*Config, error) {
	l := loader{getenv: os.Getenv}
	return l.parse(data, source)
}

// loader holds what parsing takes from outside the data, so that tests
// can replace the environment.
type loader struct {
	dir    string // resolves a relative api_key_file; "" is the working dir
	getenv func(string) string
}

func (l loader) parse(data []byte, source string) (*Config, error) {
	if source == "" {
		source = "config"
	}
	var raw map[string]toml.Primitive
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		return nil, &Errors{Source: source, List: []KeyError{syntaxError(err, data)}}
	}

	c := Default()
	var p problems
	d := decoder{md: md, order: keyOrder(md), p: &p}
	d.fields(raw, nil, "", reflect.ValueOf(&c).Elem())
	c.check(&p)

	key := l.abusixKey(c.Abusix, &p)
	if key != "" {
		for i, list := range c.Lists {
			if list.Name == AbusixListName || list.Name == AbusixRcptListName {
				p.add(fmt.Sprintf("list[%d].name", i),
					"%q is taken by a list that [abusix] adds", list.Name)
			}
		}
		c.Lists = append(abusixLists(key), c.Lists...)
	}
	if len(c.Lists) == 0 && !p.has("abusix") && !p.has("list") {
		p.add("list", "%s", errNoLists)
	}

	if err := p.err(source); err != nil {
		return nil, err
	}
	return &c, nil
}

const errNoLists = "no lists configured: set [abusix] api_key or add a [[list]]"

// secretKeys are the keys whose values are secrets, for syntaxError.
var secretKeys = []string{"api_key", "secret", "redis_url", "password", "webhook"}

// syntaxError turns a TOML syntax error into a KeyError with its line.
// When the line (or the last key) may hold a secret, the parser's message,
// which quotes the text it choked on, is withheld.
func syntaxError(err error, data []byte) KeyError {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return KeyError{Msg: err.Error()}
	}
	msg := "toml: " + pe.Message
	line := ""
	if lines := strings.Split(string(data), "\n"); pe.Position.Line-1 < len(lines) &&
		pe.Position.Line > 0 {
		line = strings.ToLower(lines[pe.Position.Line-1])
	}
	for _, s := range secretKeys {
		if strings.Contains(line, s) || strings.Contains(strings.ToLower(pe.LastKey), s) {
			msg = "toml: syntax error (details withheld: the line may hold a secret)"
			break
		}
	}
	return KeyError{Line: pe.Position.Line, Msg: msg}
}

// decoder decodes a parsed document into a Config one key at a time, so
// that an unknown key or a value of the wrong type is one problem among
// others rather than the end of decoding. Keys match field tags exactly.
type decoder struct {
	md    toml.MetaData
	order map[string]int // key path -> position of its first appearance
	p     *problems
}

func keyOrder(md toml.MetaData) map[string]int {
	order := make(map[string]int)
	for i, k := range md.Keys() {
		if _, ok := order[k.String()]; !ok {
			order[k.String()] = i
		}
	}
	return order
}

// fields decodes the keys of one table into the struct rv. key is the
// table's TOML key (for ordering), path its display path.
func (d *decoder) fields(raw map[string]toml.Primitive, key toml.Key, path string,
	rv reflect.Value) {
	tags := fieldTags(rv.Type())
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		if c := d.order[child(key, a).String()] - d.order[child(key, b).String()]; c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})

	for _, name := range names {
		sub := child(key, name)
		subPath := joinPath(path, name)
		i, ok := tags[name]
		if !ok {
			d.p.add(subPath, "unknown key%s", suggest(name, tags))
			continue
		}
		d.value(raw[name], sub, subPath, rv.Field(i))
	}
}

func (d *decoder) value(prim toml.Primitive, key toml.Key, path string, fv reflect.Value) {
	t := fv.Type()
	switch {
	case reflect.PointerTo(t).Implements(textUnmarshaler):
		d.leaf(prim, path, fv)
	case t.Kind() == reflect.Struct:
		// The decoder turns a non-table into an empty map without an
		// error, so look at the value first.
		var raw map[string]toml.Primitive
		if !d.isTable(prim) || d.md.PrimitiveDecode(prim, &raw) != nil {
			d.p.add(path, "must be a table ([%s])", path)
			return
		}
		d.fields(raw, key, path, fv)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		var raw []map[string]toml.Primitive
		if !d.isTableArray(prim) || d.md.PrimitiveDecode(prim, &raw) != nil {
			d.p.add(path, "must be an array of tables ([[%s]])", path)
			return
		}
		out := reflect.MakeSlice(t, len(raw), len(raw))
		for i := range raw {
			d.fields(raw[i], key, fmt.Sprintf("%s[%d]", path, i), out.Index(i))
		}
		fv.Set(out)
	default:
		d.leaf(prim, path, fv)
	}
}

func (d *decoder) isTable(prim toml.Primitive) bool {
	var v any
	_ = d.md.PrimitiveDecode(prim, &v)
	_, ok := v.(map[string]any)
	return ok
}

func (d *decoder) isTableArray(prim toml.Primitive) bool {
	var v any
	_ = d.md.PrimitiveDecode(prim, &v)
	switch v := v.(type) {
	case []map[string]any:
		return true
	case []any: // an inline array
		for _, item := range v {
			if _, ok := item.(map[string]any); !ok {
				return false
			}
		}
		return true
	}
	return false
}

// leaf decodes a value that is not a table. On failure fv keeps its default.
func (d *decoder) leaf(prim toml.Primitive, path string, fv reflect.Value) {
	v := reflect.New(fv.Type())
	err := d.md.PrimitiveDecode(prim, v.Interface())
	if err == nil {
		fv.Set(v.Elem())
		return
	}
	var pe toml.ParseError
	if errors.As(err, &pe) { // from UnmarshalText: the message is ours
		d.p.add(path, "%s", pe.Message)
		return
	}

	var got any
	_ = d.md.PrimitiveDecode(prim, &got)
	if items, ok := got.([]any); ok && fv.Kind() == reflect.Slice {
		elem := fv.Type().Elem()
		for i, item := range items {
			if reflect.TypeOf(item) != elem {
				d.p.add(fmt.Sprintf("%s[%d]", path, i), "must be %s, got %s",
					typeWant(elem), typeGot(item))
				return
			}
		}
	}
	d.p.add(path, "must be %s, got %s", typeWant(fv.Type()), typeGot(got))
}

// child returns key extended by name, never sharing key's array.
func child(key toml.Key, name string) toml.Key {
	return append(slices.Clip(key), name)
}

var textUnmarshaler = reflect.TypeFor[interface{ UnmarshalText([]byte) error }]()

// fieldTags maps the TOML keys of struct type t to field indices.
func fieldTags(t reflect.Type) map[string]int {
	tags := make(map[string]int)
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		tags[name] = i
	}
	return tags
}

func typeWant(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[Duration]():
		return `a duration such as "5s"`
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Int:
		return "an integer"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return "an array of strings"
	}
	return t.String()
}

func typeGot(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	}
	return "a date or time" // the only TOML types left
}

// joinPath appends a key to a display path, quoting it as TOML would when
// it is not a bare key.
func joinPath(path, key string) string {
	bare := key != ""
	for _, r := range key {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			r == '_' || r == '-') {
			bare = false
		}
	}
	if !bare {
		key = fmt.Sprintf("%q", key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest names the known key closest to an unknown one, if any is close.
func suggest(name string, known map[string]int) string {
	best, bestDist := "", 3 // suggest only within two edits
	for k := range known {
		if strings.EqualFold(k, name) {
			return fmt.Sprintf(" (keys are case-sensitive: %s)", k)
		}
		dist := editDistance(k, name)
		if dist*2 > len(name) {
			continue
		}
		if dist < bestDist || dist == bestDist && k < best {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
