package agent

import (
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ConfigKeys returns every key path the config parser accepts, sorted:
// "vips", "vips[].ports", "vips[].ports[].to_port", ... ("[]" marks a list
// of mappings). It is read from the raw structs' yaml tags, the same tags
// the decoder matches keys against, so a key added to the structs shows up
// here without anyone keeping a list: docs/config_test.go holds
// docs/config.md's key table to it.
func ConfigKeys() []string {
	var keys []string
	collectKeys(reflect.TypeFor[rawConfig](), "", &keys)
	slices.Sort(keys)
	return keys
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func collectKeys(t reflect.Type, prefix string, keys *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if slices.Contains(strings.Split(opts, ","), "inline") {
			collectKeys(derefType(f.Type), prefix, keys)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // yaml.v3's default key
		}
		path := prefix + name
		*keys = append(*keys, path)
		// A type that decodes itself (strictInt, strictList, ...) is one
		// value, whatever its fields.
		ft := derefType(f.Type)
		if reflect.PointerTo(ft).Implements(unmarshalerType) {
			continue
		}
		switch {
		case ft.Kind() == reflect.Struct:
			collectKeys(ft, path+".", keys)
		case ft.Kind() == reflect.Slice && derefType(ft.Elem()).Kind() == reflect.Struct &&
			!reflect.PointerTo(derefType(ft.Elem())).Implements(unmarshalerType):
			collectKeys(derefType(ft.Elem()), path+"[].", keys)
		}
	}
}

func derefType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}
