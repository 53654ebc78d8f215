package fakefc

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
)

// ApplyConfigFile configures the VM from a --config-file (the keys of GET
// /vm/config) and starts it, as Firecracker does. Each section goes through
// the same handler as its API request, in the boot order.
func (v *VMM) ApplyConfigFile(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	if err := configFileSchema.check(raw); err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var sections map[string]json.RawMessage
	if err := json.Unmarshal(raw, &sections); err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	type call struct {
		method, path string
		body         []byte
	}
	var calls []call
	single := func(key, p string) {
		if b, ok := sections[key]; ok && string(b) != "null" {
			calls = append(calls, call{http.MethodPut, p, b})
		}
	}
	list := func(key, prefix, idField string) error {
		b, ok := sections[key]
		if !ok || string(b) == "null" {
			return nil
		}
		var items []map[string]json.RawMessage
		if err := json.Unmarshal(b, &items); err != nil {
			return fmt.Errorf("config file %s: %w", key, err)
		}
		for _, it := range items {
			var id string
			_ = json.Unmarshal(it[idField], &id)
			body, _ := json.Marshal(it)
			calls = append(calls, call{http.MethodPut, prefix + url.PathEscape(id), body})
		}
		return nil
	}
	single("logger", "/logger")
	single("metrics", "/metrics")
	single("boot-source", "/boot-source")
	if err := list("drives", "/drives/", "drive_id"); err != nil {
		return err
	}
	single("machine-config", "/machine-config")
	if err := list("network-interfaces", "/network-interfaces/", "iface_id"); err != nil {
		return err
	}
	single("vsock", "/vsock")
	single("entropy", "/entropy")
	single("mmds-config", "/mmds/config")
	single("balloon", "/balloon")
	calls = append(calls, call{http.MethodPut, "/actions", []byte(`{"action_type":"InstanceStart"}`)})

	v.mu.Lock()
	defer v.mu.Unlock()
	for _, c := range calls {
		if _, aerr := v.route(c.method, c.path, c.body); aerr != nil {
			return fmt.Errorf("config file: %s %s: %s", c.method, c.path, aerr.msg)
		}
	}
	return nil
}
