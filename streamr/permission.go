package streamr

import "fmt"

// Permission is a StreamRegistry permission type. The values are the
// contract's PermissionType enum (an ABI uint8), so they go on the chain
// unchanged.
type Permission uint8

// The StreamRegistry's permission types, in the contract's order.
const (
	PermissionEdit Permission = iota
	PermissionDelete
	PermissionPublish
	PermissionSubscribe
	PermissionGrant
)

var permissionNames = [...]string{"edit", "delete", "publish", "subscribe", "grant"}

// String is the lower-case name the command line and the logs use.
func (p Permission) String() string {
	if int(p) < len(permissionNames) {
		return permissionNames[p]
	}
	return fmt.Sprintf("permission(%d)", uint8(p))
}

// ParsePermission reads a name String produces.
func ParsePermission(s string) (Permission, error) {
	for i, name := range permissionNames {
		if s == name {
			return Permission(i), nil
		}
	}
	return 0, fmt.Errorf("unknown permission %q (want edit, delete, publish, subscribe or grant)", s)
}
