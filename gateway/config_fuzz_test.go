package gateway

import (
	"bytes"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var errPosition = regexp.MustCompile(`fuzz\.toml:(\d+):(\d+):`)

// FuzzDecodeConfig decodes config files of any content over the defaults,
// as run and check-config do. A refused file gets an error that names the
// file, points only at lines the file has and speaks in the file's terms,
// not Go's; decoding is deterministic; what decodes is validated without a
// panic.
func FuzzDecodeConfig(f *testing.F) {
	f.Add([]byte("state_dir = \"x\"\n[storage]\nquota = \"1GB\"\nretention = \"720h\"\n"))
	f.Add([]byte("[[rule]]\ntopic = \"a/+\"\nstream = \"{address}/a/{1}\"\npartitions = 4\npartition_key = \"{1}\"\n"))
	f.Add([]byte("[[mqtt.listener]]\ntype = \"tls\"\naddress = \"127.0.0.1:8883\"\n[http]\naddress = 5\n"))
	f.Add([]byte("[overlay]\nenabled = true\nbootstrap = [\"/ip4/1.2.3.4/tcp/1\", 5]\n[[subscribe]]\nstream = \"nope\"\n"))
	f.Add([]byte("storage.quota = 5\n[rule]\ntopic = \"a\"\n[strage]\nx = 1\n[storage\n"))
	f.Add([]byte("[log]\nlevel = \"loud\"\nlevel = \"info\"\n[signing]\nsign_delay = \"-1s\"\n"))
	f.Add([]byte("[log]\nlevel = \"info\"\nlevel = \"info\"\n[log]\n"))
	f.Add([]byte("a = {b = [1, {c = \"\u00e9\"}], d = 1979-05-27T07:32:00Z}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := defaultConfig()
		err := decodeConfig("fuzz.toml", data, &cfg)
		again := defaultConfig()
		err2 := decodeConfig("fuzz.toml", data, &again)
		if errText(err) != errText(err2) || (err == nil && !reflect.DeepEqual(cfg, again)) {
			t.Fatalf("decoding is not deterministic: %v, then %v", err, err2)
		}
		if err == nil {
			_ = cfg.validate() // must not panic; its errors are tested by TestConfigErrors
			return
		}
		checkConfigError(t, data, err.Error())
	})
}

func checkConfigError(t *testing.T, data []byte, msg string) {
	t.Helper()
	if !strings.Contains(msg, "fuzz.toml") {
		t.Fatalf("error does not name the file: %s", msg)
	}
	lines := bytes.Count(data, []byte("\n")) + 1
	for _, m := range errPosition.FindAllStringSubmatch(msg, -1) {
		if n, _ := strconv.Atoi(m[1]); n < 1 || n > lines {
			t.Fatalf("error points at line %d of a %d-line file: %s", n, lines, msg)
		}
	}
	ours := strings.ReplaceAll(msg, "fuzz.toml", "")
	for _, goName := range []string{"main.", "[]main", "reflect", "toml: "} {
		if strings.Contains(ours, goName) && !bytes.Contains(data, []byte(goName)) {
			t.Fatalf("error names Go's %q: %s", goName, msg)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
