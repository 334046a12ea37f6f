package pb

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsFresh regenerates the .pb.go files with the pinned
// pipeline (gen.sh) in a scratch copy and compares them with the committed
// ones: a .proto edited without regenerating, or a generated file edited
// by hand, fails here.
func TestGeneratedCodeIsFresh(t *testing.T) {
	if testing.Short() {
		t.Skip("runs protoc and installs protoc-gen-go")
	}
	if _, err := exec.LookPath("protoc"); err != nil {
		if os.Getenv("TRIBUTARY_REQUIRE_TOOLS") != "" {
			t.Fatalf("protoc not found and TRIBUTARY_REQUIRE_TOOLS is set: %v", err)
		}
		t.Skip("protoc not installed (apt-get install protobuf-compiler libprotobuf-dev)")
	}
	dir := t.TempDir()
	sources, err := filepath.Glob("*.proto")
	if err != nil || len(sources) < 2 {
		t.Fatalf("proto files %v, %v", sources, err)
	}
	for _, f := range append(sources, "gen.sh") {
		copyFile(t, f, filepath.Join(dir, f))
	}
	cmd := exec.Command("sh", filepath.Join(dir, "gen.sh"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, out)
	}
	for _, src := range sources {
		name := src[:len(src)-len(".proto")] + ".pb.go"
		want, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what %s generates: run go generate ./streamr/pb", name, src)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
