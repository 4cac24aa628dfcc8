package agent

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decodeRaw decodes a YAML document into the raw shapes by walking its
// nodes against the structs' own yaml tags: every key and value has its
// line, an unknown key is named with the keys the struct has there, and a
// value of the wrong shape with what the field expects, in the config's
// terms. Nothing depends on the wording of yaml.v3's messages.
func decodeRaw(doc *yaml.Node, raw *rawConfig) error {
	var errs lineErrors
	decodeNode(doc, reflect.ValueOf(raw).Elem(), &errs)
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// lineErrors are the decoding errors, each with the line it is at.
type lineErrors []lineError

type lineError struct {
	line int
	msg  string
}

// Error renders "line N: msg", one per line, the later ones indented
// (fileMessage puts the file in front of each).
func (e lineErrors) Error() string {
	lines := make([]string, len(e))
	for i, l := range e {
		lines[i] = fmt.Sprintf("line %d: %s", l.line, l.msg)
	}
	return strings.Join(lines, "\n  ")
}

func (e *lineErrors) add(n *yaml.Node, format string, args ...any) {
	*e = append(*e, lineError{line: n.Line, msg: fmt.Sprintf(format, args...)})
}

var rawUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()

// decodeNode sets v from n; a null leaves v as it is (absent).
func decodeNode(n *yaml.Node, v reflect.Value, errs *lineErrors) {
	for n.Kind == yaml.DocumentNode || n.Kind == yaml.AliasNode {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else if len(n.Content) > 0 {
			n = n.Content[0]
		} else {
			return
		}
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	if v.Kind() == reflect.Pointer {
		p := reflect.New(v.Type().Elem())
		if p.Type().Implements(rawUnmarshaler) {
			// A strict scalar decodes itself and keeps what it was given
			// for validation's error.
			if err := n.Decode(p.Interface()); err != nil {
				errs.add(n, "%q: %v", describeNode(n), err)
				return
			}
			v.Set(p)
			return
		}
		decodeNode(n, p.Elem(), errs)
		v.Set(p)
		return
	}
	if reflect.PointerTo(v.Type()).Implements(rawUnmarshaler) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			errs.add(n, "%q: %v", describeNode(n), err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		decodeMapping(n, v, errs)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			errs.add(n, "%q: expected a list of %s", describeNode(n), listNoun(v.Type().Elem()))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			decodeNode(c, s.Index(i), errs)
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			errs.add(n, "%q: expected a string", describeNode(n))
			return
		}
		v.SetString(n.Value)
	default:
		// Every raw field is one of the above: a new kind of field
		// needs its case here.
		errs.add(n, "%q: cannot decode into a field of type %s", describeNode(n), v.Type())
	}
}

// decodeMapping sets the struct v from the mapping n, key by key.
func decodeMapping(n *yaml.Node, v reflect.Value, errs *lineErrors) {
	if n.Kind != yaml.MappingNode {
		errs.add(n, "%q: expected a mapping of keys", describeNode(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			decodeNode(val, v, errs) // a YAML merge key: its mapping's keys
			continue
		}
		if line, dup := seen[k.Value]; dup {
			errs.add(k, "key %q already defined at line %d", k.Value, line)
			continue
		}
		seen[k.Value] = k.Line
		f, ok := fieldByKey(v.Type(), k.Value)
		if !ok {
			errs.add(k, "unknown key %q (expected one of: %s)", k.Value, keysHelp(v.Type()))
			continue
		}
		decodeNode(val, v.FieldByIndex(f.Index), errs)
	}
}

// yamlKey is a struct field's key ("" when it has none).
func yamlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if !f.IsExported() || name == "-" {
		return ""
	}
	return name
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); yamlKey(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// keysHelp lists the keys a mapping of type t takes, in the struct's order;
// a struct can phrase them better (rawCheck groups them by kind).
func keysHelp(t reflect.Type) string {
	if h, ok := reflect.New(t).Interface().(interface{ keysHelp() string }); ok {
		return h.keysHelp()
	}
	var keys []string
	for i := range t.NumField() {
		if k := yamlKey(t.Field(i)); k != "" {
			keys = append(keys, k)
		}
	}
	return strings.Join(keys, ", ")
}

// listNoun names what a list of t holds.
func listNoun(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[rawVIP]():
		return "VIPs"
	case reflect.TypeFor[rawPort](), reflect.TypeFor[rawReturnPort]():
		return "ports"
	case reflect.TypeFor[rawCheck]():
		return "checks"
	case reflect.TypeFor[string]():
		return "strings"
	}
	return "values"
}

// describeNode is a node as an error quotes it: a scalar's text, else what
// it is.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Value
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	return "a value"
}
