package streamr

import "testing"

func TestPermissionNames(t *testing.T) {
	tests := []struct {
		name string
		want Permission
		abi  uint8
	}{
		{"edit", PermissionEdit, 0},
		{"delete", PermissionDelete, 1},
		{"publish", PermissionPublish, 2},
		{"subscribe", PermissionSubscribe, 3},
		{"grant", PermissionGrant, 4},
	}
	for _, tt := range tests {
		got, err := ParsePermission(tt.name)
		if err != nil || got != tt.want || uint8(got) != tt.abi || got.String() != tt.name {
			t.Errorf("ParsePermission(%q) = %v (%d), %v; want %v (ABI %d)", tt.name, got, got, err, tt.want, tt.abi)
		}
	}
	if _, err := ParsePermission("Publish"); err == nil {
		t.Error("ParsePermission accepted a name with the wrong case")
	}
	if s := Permission(9).String(); s != "permission(9)" {
		t.Errorf("Permission(9).String() = %q", s)
	}
}
