// SPDX-License-Identifier: MIT
// A StreamRegistry for test chains: the subset of StreamRegistryV5's ABI that Tributary uses
// (StreamRegistryV5.abi.txt lists it, as @streamr/network-contracts 9.1.0 ships it), with the
// semantics of the deployed contract: stream IDs "<creator address lowercase><path>", users keyed by
// (stream version, user bytes) so a 20-byte user ID and the same address share permissions, public
// permissions on user address(0) merged into the getPermissionsFor* answers, expirations in seconds
// compared with block.timestamp, and getPermissionsForUserId / getStreamMetadata reverting with
// error_streamDoesNotExist for an unknown stream. Not upgradeable, no ENS, no trusted forwarders.
pragma solidity 0.8.9;

contract TestStreamRegistry {
    enum PermissionType { Edit, Delete, Publish, Subscribe, Grant }

    struct Permission {
        bool canEdit;
        bool canDelete;
        uint256 publishExpiration;
        uint256 subscribeExpiration;
        bool canGrant;
    }

    uint256 public constant MAX_INT = type(uint256).max;
    address public constant PUBLIC_PERMISSION_USER_ID = address(0);

    mapping(string => string) public streamIdToMetadata;
    mapping(string => uint32) public streamIdToVersion;
    mapping(string => mapping(bytes32 => Permission)) public streamIdToPermissions;

    event StreamCreated(string id, string metadata);
    event StreamUpdated(string id, string metadata);
    event PermissionUpdated(string streamId, address user, bool canEdit, bool canDelete, uint256 publishExpiration, uint256 subscribeExpiration, bool canGrant);
    event PermissionUpdatedForUserId(string streamId, bytes user, bool canEdit, bool canDelete, uint256 publishExpiration, uint256 subscribeExpiration, bool canGrant);

    modifier streamExists(string calldata streamId) {
        require(exists(streamId), "error_streamDoesNotExist");
        _;
    }

    modifier canGrant(string calldata streamId) {
        require(streamIdToPermissions[streamId][getAddressKey(streamId, msg.sender)].canGrant, "error_noSharePermission");
        _;
    }

    function exists(string calldata streamId) public view returns (bool) {
        return bytes(streamIdToMetadata[streamId]).length != 0;
    }

    function createStream(string calldata streamIdPath, string calldata metadataJsonString) external {
        bytes memory path = bytes(streamIdPath);
        require(path.length > 0 && path[0] == "/", "error_pathMustStartWithSlash");
        for (uint256 i = 1; i < path.length; i++) {
            bytes1 c = path[i];
            require((c >= "-" && c <= "9") || (c >= "A" && c <= "Z") || (c >= "a" && c <= "z") || c == "_", "error_invalidPathChars");
        }
        require(bytes(metadataJsonString).length > 0, "error_metadataJsonStringIsEmpty");
        string memory streamId = string(abi.encodePacked(addressToString(msg.sender), streamIdPath));
        require(bytes(streamIdToMetadata[streamId]).length == 0, "error_streamAlreadyExists");
        streamIdToVersion[streamId] += 1;
        streamIdToMetadata[streamId] = metadataJsonString;
        emit StreamCreated(streamId, metadataJsonString);
        _set(streamId, abi.encodePacked(msg.sender), Permission(true, true, MAX_INT, MAX_INT, true));
    }

    function getStreamMetadata(string calldata streamId) external view streamExists(streamId) returns (string memory) {
        return streamIdToMetadata[streamId];
    }

    function updateStreamMetadata(string calldata streamId, string calldata metadata) external streamExists(streamId) {
        require(streamIdToPermissions[streamId][getAddressKey(streamId, msg.sender)].canEdit, "error_noEditPermission");
        require(bytes(metadata).length > 0, "error_metadataJsonStringIsEmpty");
        streamIdToMetadata[streamId] = metadata;
        emit StreamUpdated(streamId, metadata);
    }

    function getAddressKey(string memory streamId, address user) public view returns (bytes32) {
        return keccak256(abi.encode(streamIdToVersion[streamId], user));
    }

    function getUserKeyForUserId(string memory streamId, bytes memory user) public view returns (bytes32) {
        return keccak256(abi.encodePacked(uint256(streamIdToVersion[streamId]), bytes12(0), user));
    }

    function getDirectPermissionsForUserId(string calldata streamId, bytes calldata user) public view streamExists(streamId) returns (Permission memory) {
        return streamIdToPermissions[streamId][getUserKeyForUserId(streamId, user)];
    }

    function getPermissionsForUserId(string calldata streamId, bytes memory user) public view streamExists(streamId) returns (Permission memory permission) {
        permission = streamIdToPermissions[streamId][getUserKeyForUserId(streamId, user)];
        Permission memory pub = streamIdToPermissions[streamId][getAddressKey(streamId, address(0))];
        if (permission.publishExpiration < block.timestamp && pub.publishExpiration >= block.timestamp) {
            permission.publishExpiration = pub.publishExpiration;
        }
        if (permission.subscribeExpiration < block.timestamp && pub.subscribeExpiration >= block.timestamp) {
            permission.subscribeExpiration = pub.subscribeExpiration;
        }
    }

    function getPermissionsForUser(string calldata streamId, address user) external view returns (Permission memory) {
        return getPermissionsForUserId(streamId, abi.encodePacked(user));
    }

    function hasPermission(string calldata streamId, address user, PermissionType permissionType) external view returns (bool) {
        return hasDirectPermission(streamId, user, permissionType) || hasDirectPermission(streamId, address(0), permissionType);
    }

    function hasPublicPermission(string calldata streamId, PermissionType permissionType) external view returns (bool) {
        return hasDirectPermission(streamId, address(0), permissionType);
    }

    function hasDirectPermission(string calldata streamId, address user, PermissionType permissionType) public view returns (bool) {
        if (!exists(streamId)) {
            return false;
        }
        Permission memory p = streamIdToPermissions[streamId][getAddressKey(streamId, user)];
        if (permissionType == PermissionType.Edit) return p.canEdit;
        if (permissionType == PermissionType.Delete) return p.canDelete;
        if (permissionType == PermissionType.Publish) return p.publishExpiration >= block.timestamp;
        if (permissionType == PermissionType.Subscribe) return p.subscribeExpiration >= block.timestamp;
        return p.canGrant;
    }

    function grantPermission(string calldata streamId, address user, PermissionType permissionType) external streamExists(streamId) canGrant(streamId) {
        _setOne(streamId, abi.encodePacked(user), permissionType, true, MAX_INT);
    }

    function grantPermissionForUserId(string calldata streamId, bytes calldata user, PermissionType permissionType) external streamExists(streamId) canGrant(streamId) {
        _setOne(streamId, user, permissionType, true, MAX_INT);
    }

    function grantPublicPermission(string calldata streamId, PermissionType permissionType) external streamExists(streamId) canGrant(streamId) {
        require(permissionType == PermissionType.Publish || permissionType == PermissionType.Subscribe, "error_publicCanOnlySubsPubl");
        _setOne(streamId, abi.encodePacked(address(0)), permissionType, true, MAX_INT);
    }

    function revokePermission(string calldata streamId, address user, PermissionType permissionType) external streamExists(streamId) {
        _requireRevoke(streamId, user == msg.sender);
        _setOne(streamId, abi.encodePacked(user), permissionType, false, 0);
    }

    function revokePermissionForUserId(string calldata streamId, bytes calldata user, PermissionType permissionType) external streamExists(streamId) {
        _requireRevoke(streamId, keccak256(user) == keccak256(abi.encodePacked(msg.sender)));
        _setOne(streamId, user, permissionType, false, 0);
    }

    function revokePublicPermission(string calldata streamId, PermissionType permissionType) external streamExists(streamId) canGrant(streamId) {
        _setOne(streamId, abi.encodePacked(address(0)), permissionType, false, 0);
    }

    function setExpirationTime(string calldata streamId, address user, PermissionType permissionType, uint256 expirationTime) external streamExists(streamId) canGrant(streamId) {
        require(permissionType == PermissionType.Publish || permissionType == PermissionType.Subscribe, "error_timeOnlyObPubSub");
        _setOne(streamId, abi.encodePacked(user), permissionType, true, expirationTime);
    }

    function setExpirationTimeForUserId(string calldata streamId, bytes calldata user, PermissionType permissionType, uint256 expirationTime) external streamExists(streamId) canGrant(streamId) {
        require(permissionType == PermissionType.Publish || permissionType == PermissionType.Subscribe, "error_timeOnlyObPubSub");
        _setOne(streamId, user, permissionType, true, expirationTime);
    }

    function addressToString(address _address) public pure returns (string memory) {
        bytes memory hexChars = "0123456789abcdef";
        bytes20 value = bytes20(_address);
        bytes memory out = new bytes(42);
        out[0] = "0";
        out[1] = "x";
        for (uint256 i = 0; i < 20; i++) {
            out[2 + i * 2] = hexChars[uint8(value[i] >> 4)];
            out[3 + i * 2] = hexChars[uint8(value[i] & 0x0f)];
        }
        return string(out);
    }

    // _requireRevoke: a user may always give up its own permissions; others need Grant.
    function _requireRevoke(string calldata streamId, bool self) private view {
        require(self || streamIdToPermissions[streamId][getAddressKey(streamId, msg.sender)].canGrant, "error_noSharePermission");
    }

    function _setOne(string memory streamId, bytes memory user, PermissionType permissionType, bool on, uint256 expiration) private {
        Permission memory p = streamIdToPermissions[streamId][getUserKeyForUserId(streamId, user)];
        if (permissionType == PermissionType.Edit) p.canEdit = on;
        else if (permissionType == PermissionType.Delete) p.canDelete = on;
        else if (permissionType == PermissionType.Publish) p.publishExpiration = expiration;
        else if (permissionType == PermissionType.Subscribe) p.subscribeExpiration = expiration;
        else p.canGrant = on;
        _set(streamId, user, p);
    }

    function _set(string memory streamId, bytes memory user, Permission memory p) private {
        streamIdToPermissions[streamId][getUserKeyForUserId(streamId, user)] = p;
        if (user.length == 20) {
            emit PermissionUpdated(streamId, address(bytes20(user)), p.canEdit, p.canDelete, p.publishExpiration, p.subscribeExpiration, p.canGrant);
        } else {
            emit PermissionUpdatedForUserId(streamId, user, p.canEdit, p.canDelete, p.publishExpiration, p.subscribeExpiration, p.canGrant);
        }
    }
}
