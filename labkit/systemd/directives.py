"""Every unit-file directive systemd accepts, per section, with its value kind.

Data for a unit-file linter: unknown or misspelled keys, keys in the wrong
section, deprecated keys and (with :mod:`labkit.systemd.values`) bad values.

Generated from systemd's own parser table,
``src/core/load-fragment-gperf.gperf.in`` (plus ``src/shared/install.c``
for ``[Install]`` and the ``*_table[]`` string tables for enum values), as the
union of:

* systemd v261 (commit de9dbc37ad4aa637e200ac02a0545095997055df)
* systemd v252 (tag v252.31, commit 8c2b72148f04d52dbe7a977fff002c97950df021)

The first is the primary source: its parser decides a key's kind (unless it
only keeps the key as an ignored stub).  Keys any of them knows are included,
so settings of an older systemd (Debian 12 ships 252) are known too.
Regenerate with::

    python .ci/gen_systemd_directives.py <systemd.git>@de9dbc37ad4aa637e200ac02a0545095997055df <systemd.git>@v252.31 > labkit/systemd/directives.py

Counts: 11 sections; 1462 section/key pairs (525 distinct key names);
116 deprecated pairs; 172 enum-valued pairs using 42 value tables.

Value kinds (``SECTION_KEYS[section][key]``):

``timespan`` ``bool`` ``size`` ``memory`` (size, ``N%`` or ``infinity``)
``percent`` ``nice`` ``signal`` ``exit-status`` ``exec`` ``path`` (one
absolute path) ``unit-list`` ``env`` ``enum`` (values in :data:`ENUMS`)
``int`` and ``string`` (anything else, including parsers not mapped yet).

Enum tuples list systemd's spellings from its string tables; an entry ending
in ``:`` (``"file:"``) is a prefix that takes an argument.  Settings in
:data:`ENUMS_ACCEPT_BOOL` also take a boolean, and their tuples include the
usual spellings (yes/no/true/false/on/off/1/0); settings in
:data:`ENUMS_ACCEPT_INT` also take a plain number, which no tuple can list.
:func:`enum_accepts` applies all of these rules.  Everything between the
GENERATED DATA markers is machine-written; edit the generator, not this file.
"""

from __future__ import annotations

import difflib

# --- BEGIN GENERATED DATA (.ci/gen_systemd_directives.py; do not edit by hand) ---

# unit file suffix -> the sections such a file may contain
SECTIONS_BY_TYPE: dict[str, tuple[str, ...]] = {
    ".service": ("Unit", "Service", "Install"),
    ".socket": ("Unit", "Socket", "Install"),
    ".timer": ("Unit", "Timer", "Install"),
    ".path": ("Unit", "Path", "Install"),
    ".mount": ("Unit", "Mount", "Install"),
    ".automount": ("Unit", "Automount", "Install"),
    ".swap": ("Unit", "Swap", "Install"),
    ".target": ("Unit", "Install"),
    ".slice": ("Unit", "Slice", "Install"),
    ".scope": ("Unit", "Scope"),
    ".device": ("Unit", "Install"),
}

# systemd's EXEC_CONTEXT_CONFIG_ITEMS template, shared by [Service, Socket, Mount, Swap]
_EXEC_CONTEXT: dict[str, str] = {
    "AmbientCapabilities": "string",
    "AppArmorProfile": "string",
    "BPFDelegateAttachments": "string",
    "BPFDelegateCommands": "string",
    "BPFDelegateMaps": "string",
    "BPFDelegatePrograms": "string",
    "BindLogSockets": "bool",
    "BindPaths": "string",
    "BindReadOnlyPaths": "string",
    "CPUAffinity": "string",
    "CPUSchedulingPolicy": "enum",
    "CPUSchedulingPriority": "int",
    "CPUSchedulingResetOnFork": "bool",
    "CacheDirectory": "string",
    "CacheDirectoryAccounting": "bool",
    "CacheDirectoryMode": "string",
    "CacheDirectoryQuota": "string",
    "Capabilities": "string",
    "CapabilityBoundingSet": "string",
    "ConfigurationDirectory": "string",
    "ConfigurationDirectoryMode": "string",
    "CoredumpFilter": "string",
    "DelegateNamespaces": "string",
    "DynamicUser": "bool",
    "Environment": "env",
    "EnvironmentFile": "string",
    "ExecPaths": "string",
    "ExecSearchPath": "string",
    "ExtensionDirectories": "string",
    "ExtensionImagePolicy": "string",
    "ExtensionImages": "string",
    "Group": "string",
    "IOSchedulingClass": "enum",
    "IOSchedulingPriority": "int",
    "IPCNamespacePath": "path",
    "IgnoreSIGPIPE": "bool",
    "ImportCredential": "string",
    "InaccessibleDirectories": "string",
    "InaccessiblePaths": "string",
    "KeyringMode": "enum",
    "LimitAS": "string",
    "LimitCORE": "string",
    "LimitCPU": "string",
    "LimitDATA": "string",
    "LimitFSIZE": "string",
    "LimitLOCKS": "string",
    "LimitMEMLOCK": "string",
    "LimitMSGQUEUE": "string",
    "LimitNICE": "string",
    "LimitNOFILE": "string",
    "LimitNPROC": "string",
    "LimitRSS": "string",
    "LimitRTPRIO": "string",
    "LimitRTTIME": "string",
    "LimitSIGPENDING": "string",
    "LimitSTACK": "string",
    "LoadCredential": "string",
    "LoadCredentialEncrypted": "string",
    "LockPersonality": "bool",
    "LogExtraFields": "string",
    "LogFilterPatterns": "string",
    "LogLevelMax": "enum",
    "LogNamespace": "string",
    "LogRateLimitBurst": "int",
    "LogRateLimitIntervalSec": "timespan",
    "LogsDirectory": "string",
    "LogsDirectoryAccounting": "bool",
    "LogsDirectoryMode": "string",
    "LogsDirectoryQuota": "string",
    "MemoryDenyWriteExecute": "bool",
    "MemoryKSM": "bool",
    "MemoryTHP": "enum",
    "MountAPIVFS": "bool",
    "MountFlags": "enum",
    "MountImagePolicy": "string",
    "MountImages": "string",
    "NUMAMask": "string",
    "NUMAPolicy": "enum",
    "NetworkNamespacePath": "path",
    "Nice": "nice",
    "NoExecPaths": "string",
    "NoNewPrivileges": "bool",
    "OOMScoreAdjust": "int",
    "PAMName": "string",
    "PassEnvironment": "string",
    "Personality": "string",
    "PrivateBPF": "enum",
    "PrivateDevices": "bool",
    "PrivateIPC": "bool",
    "PrivateMounts": "bool",
    "PrivateNetwork": "bool",
    "PrivatePIDs": "enum",
    "PrivateTmp": "enum",
    "PrivateUsers": "enum",
    "ProcSubset": "enum",
    "ProtectClock": "bool",
    "ProtectControlGroups": "enum",
    "ProtectHome": "enum",
    "ProtectHostname": "enum",
    "ProtectKernelLogs": "bool",
    "ProtectKernelModules": "bool",
    "ProtectKernelTunables": "bool",
    "ProtectProc": "enum",
    "ProtectSystem": "enum",
    "ReadOnlyDirectories": "string",
    "ReadOnlyPaths": "string",
    "ReadWriteDirectories": "string",
    "ReadWritePaths": "string",
    "RemoveIPC": "bool",
    "RestrictAddressFamilies": "string",
    "RestrictFileSystems": "string",
    "RestrictNamespaces": "string",
    "RestrictRealtime": "bool",
    "RestrictSUIDSGID": "bool",
    "RootDirectory": "path",
    "RootEphemeral": "bool",
    "RootHash": "string",
    "RootHashSignature": "string",
    "RootImage": "path",
    "RootImageOptions": "string",
    "RootImagePolicy": "string",
    "RootMStack": "path",
    "RootVerity": "path",
    "RuntimeDirectory": "string",
    "RuntimeDirectoryMode": "string",
    "RuntimeDirectoryPreserve": "enum",
    "SELinuxContext": "string",
    "SecureBits": "string",
    "SetCredential": "string",
    "SetCredentialEncrypted": "string",
    "SetLoginEnvironment": "bool",
    "SmackProcessLabel": "string",
    "StandardError": "enum",
    "StandardInput": "enum",
    "StandardInputData": "string",
    "StandardInputText": "string",
    "StandardOutput": "enum",
    "StateDirectory": "string",
    "StateDirectoryAccounting": "bool",
    "StateDirectoryMode": "string",
    "StateDirectoryQuota": "string",
    "SupplementaryGroups": "string",
    "SyslogFacility": "enum",
    "SyslogIdentifier": "string",
    "SyslogLevel": "enum",
    "SyslogLevelPrefix": "bool",
    "SystemCallArchitectures": "string",
    "SystemCallErrorNumber": "string",
    "SystemCallFilter": "string",
    "SystemCallLog": "string",
    "TTYColumns": "int",
    "TTYPath": "path",
    "TTYReset": "bool",
    "TTYRows": "int",
    "TTYVHangup": "bool",
    "TTYVTDisallocate": "bool",
    "TemporaryFileSystem": "string",
    "TimeoutCleanSec": "timespan",
    "TimerSlackNSec": "timespan",
    "UMask": "string",
    "UnsetEnvironment": "string",
    "User": "string",
    "UserNamespacePath": "path",
    "UtmpIdentifier": "string",
    "UtmpMode": "enum",
    "WorkingDirectory": "string",
}

# systemd's KILL_CONTEXT_CONFIG_ITEMS template, shared by [Service, Socket, Mount, Swap, Scope]
_KILL_CONTEXT: dict[str, str] = {
    "FinalKillSignal": "signal",
    "KillMode": "enum",
    "KillSignal": "signal",
    "RestartKillSignal": "signal",
    "SendSIGHUP": "bool",
    "SendSIGKILL": "bool",
    "WatchdogSignal": "signal",
}

# systemd's CGROUP_CONTEXT_CONFIG_ITEMS template, shared by [Service, Socket, Mount, Swap, Slice, Scope]
_CGROUP_CONTEXT: dict[str, str] = {
    "AllowedCPUs": "string",
    "AllowedMemoryNodes": "string",
    "BPFProgram": "string",
    "BindNetworkInterface": "string",
    "BlockIOAccounting": "bool",
    "BlockIODeviceWeight": "string",
    "BlockIOReadBandwidth": "string",
    "BlockIOWeight": "int",
    "BlockIOWriteBandwidth": "string",
    "CPUAccounting": "bool",
    "CPUPressureThresholdSec": "timespan",
    "CPUPressureWatch": "enum",
    "CPUQuota": "percent",
    "CPUQuotaPeriodSec": "timespan",
    "CPUSetPartition": "enum",
    "CPUShares": "int",
    "CPUWeight": "string",
    "CoredumpReceive": "bool",
    "DefaultMemoryLow": "memory",
    "DefaultMemoryMin": "memory",
    "DefaultStartupMemoryLow": "string",
    "Delegate": "string",
    "DelegateSubgroup": "string",
    "DeviceAllow": "string",
    "DevicePolicy": "enum",
    "DisableControllers": "string",
    "IOAccounting": "bool",
    "IODeviceLatencyTargetSec": "string",
    "IODeviceWeight": "string",
    "IOPressureThresholdSec": "timespan",
    "IOPressureWatch": "enum",
    "IOReadBandwidthMax": "string",
    "IOReadIOPSMax": "string",
    "IOWeight": "int",
    "IOWriteBandwidthMax": "string",
    "IOWriteIOPSMax": "string",
    "IPAccounting": "bool",
    "IPAddressAllow": "string",
    "IPAddressDeny": "string",
    "IPEgressFilterPath": "string",
    "IPIngressFilterPath": "string",
    "ManagedOOMMemoryPressure": "enum",
    "ManagedOOMMemoryPressureDurationSec": "timespan",
    "ManagedOOMMemoryPressureLimit": "percent",
    "ManagedOOMPreference": "enum",
    "ManagedOOMSwap": "enum",
    "MemoryAccounting": "bool",
    "MemoryHigh": "memory",
    "MemoryLimit": "memory",
    "MemoryLow": "memory",
    "MemoryMax": "memory",
    "MemoryMin": "memory",
    "MemoryPressureThresholdSec": "timespan",
    "MemoryPressureWatch": "enum",
    "MemorySwapMax": "memory",
    "MemoryZSwapMax": "memory",
    "MemoryZSwapWriteback": "bool",
    "NFTSet": "string",
    "NetClass": "string",
    "OOMRules": "string",
    "RestrictNetworkInterfaces": "string",
    "Slice": "unit-list",
    "SocketBindAllow": "string",
    "SocketBindDeny": "string",
    "StartupAllowedCPUs": "string",
    "StartupAllowedMemoryNodes": "string",
    "StartupBlockIOWeight": "int",
    "StartupCPUShares": "int",
    "StartupCPUWeight": "string",
    "StartupIOWeight": "int",
    "StartupMemoryHigh": "memory",
    "StartupMemoryLow": "memory",
    "StartupMemoryMax": "memory",
    "StartupMemorySwapMax": "memory",
    "StartupMemoryZSwapMax": "memory",
    "TasksAccounting": "bool",
    "TasksMax": "string",
}

# keys only [Unit] has
_UNIT_KEYS: dict[str, str] = {
    "After": "unit-list",
    "AllowIsolate": "bool",
    "AssertACPower": "string",
    "AssertArchitecture": "string",
    "AssertCPUFeature": "string",
    "AssertCPUPressure": "string",
    "AssertCPUs": "string",
    "AssertCapability": "string",
    "AssertControlGroupController": "string",
    "AssertCredential": "string",
    "AssertDirectoryNotEmpty": "string",
    "AssertEnvironment": "string",
    "AssertFileIsExecutable": "string",
    "AssertFileNotEmpty": "string",
    "AssertFirstBoot": "string",
    "AssertFraction": "string",
    "AssertGroup": "string",
    "AssertHost": "string",
    "AssertIOPressure": "string",
    "AssertKernelCommandLine": "string",
    "AssertKernelModuleLoaded": "string",
    "AssertKernelVersion": "string",
    "AssertMachineTag": "string",
    "AssertMemory": "string",
    "AssertMemoryPressure": "string",
    "AssertNeedsUpdate": "string",
    "AssertOSRelease": "string",
    "AssertPathExists": "string",
    "AssertPathExistsGlob": "string",
    "AssertPathIsDirectory": "string",
    "AssertPathIsEncrypted": "string",
    "AssertPathIsMountPoint": "string",
    "AssertPathIsReadWrite": "string",
    "AssertPathIsSocket": "string",
    "AssertPathIsSymbolicLink": "string",
    "AssertSecurity": "string",
    "AssertUser": "string",
    "AssertVersion": "string",
    "AssertVirtualization": "string",
    "Before": "unit-list",
    "BindTo": "unit-list",
    "BindsTo": "unit-list",
    "CollectMode": "enum",
    "ConditionACPower": "string",
    "ConditionArchitecture": "string",
    "ConditionCPUFeature": "string",
    "ConditionCPUPressure": "string",
    "ConditionCPUs": "string",
    "ConditionCapability": "string",
    "ConditionControlGroupController": "string",
    "ConditionCredential": "string",
    "ConditionDirectoryNotEmpty": "string",
    "ConditionEnvironment": "string",
    "ConditionFileIsExecutable": "string",
    "ConditionFileNotEmpty": "string",
    "ConditionFirmware": "string",
    "ConditionFirstBoot": "string",
    "ConditionFraction": "string",
    "ConditionGroup": "string",
    "ConditionHost": "string",
    "ConditionIOPressure": "string",
    "ConditionKernelCommandLine": "string",
    "ConditionKernelModuleLoaded": "string",
    "ConditionKernelVersion": "string",
    "ConditionMachineTag": "string",
    "ConditionMemory": "string",
    "ConditionMemoryPressure": "string",
    "ConditionNeedsUpdate": "string",
    "ConditionOSRelease": "string",
    "ConditionPathExists": "string",
    "ConditionPathExistsGlob": "string",
    "ConditionPathIsDirectory": "string",
    "ConditionPathIsEncrypted": "string",
    "ConditionPathIsMountPoint": "string",
    "ConditionPathIsReadWrite": "string",
    "ConditionPathIsSocket": "string",
    "ConditionPathIsSymbolicLink": "string",
    "ConditionSecurity": "string",
    "ConditionUser": "string",
    "ConditionVersion": "string",
    "ConditionVirtualization": "string",
    "Conflicts": "unit-list",
    "DefaultDependencies": "bool",
    "Description": "string",
    "Documentation": "string",
    "FailureAction": "enum",
    "FailureActionExitStatus": "exit-status",
    "IgnoreOnIsolate": "bool",
    "IgnoreOnSnapshot": "string",
    "JobRunningTimeoutSec": "timespan",
    "JobTimeoutAction": "enum",
    "JobTimeoutRebootArgument": "string",
    "JobTimeoutSec": "timespan",
    "JoinsNamespaceOf": "unit-list",
    "OnFailure": "unit-list",
    "OnFailureIsolate": "bool",
    "OnFailureJobMode": "enum",
    "OnSuccess": "unit-list",
    "OnSuccessJobMode": "enum",
    "PartOf": "unit-list",
    "PropagateReloadFrom": "unit-list",
    "PropagateReloadTo": "unit-list",
    "PropagatesReloadTo": "unit-list",
    "PropagatesStopTo": "unit-list",
    "RebootArgument": "string",
    "RefuseManualStart": "bool",
    "RefuseManualStop": "bool",
    "ReloadPropagatedFrom": "unit-list",
    "Requires": "unit-list",
    "RequiresMountsFor": "string",
    "RequiresOverridable": "unit-list",
    "Requisite": "unit-list",
    "RequisiteOverridable": "unit-list",
    "SourcePath": "path",
    "StartLimitAction": "enum",
    "StartLimitBurst": "int",
    "StartLimitInterval": "timespan",
    "StartLimitIntervalSec": "timespan",
    "StopPropagatedFrom": "unit-list",
    "StopWhenUnneeded": "bool",
    "SuccessAction": "enum",
    "SuccessActionExitStatus": "exit-status",
    "SurviveFinalKillSignal": "bool",
    "Upholds": "unit-list",
    "Wants": "unit-list",
    "WantsMountsFor": "string",
}

# keys only [Service] has
_SERVICE_KEYS: dict[str, str] = {
    "BusName": "string",
    "BusPolicy": "string",
    "ExecCondition": "exec",
    "ExecReload": "exec",
    "ExecReloadPost": "exec",
    "ExecStart": "exec",
    "ExecStartPost": "exec",
    "ExecStartPre": "exec",
    "ExecStop": "exec",
    "ExecStopPost": "exec",
    "ExitType": "enum",
    "FailureAction": "enum",
    "FileDescriptorStoreMax": "int",
    "FileDescriptorStorePreserve": "enum",
    "GuessMainPID": "bool",
    "NonBlocking": "bool",
    "NotifyAccess": "enum",
    "OOMPolicy": "enum",
    "OpenFile": "string",
    "PIDFile": "path",
    "PermissionsStartOnly": "bool",
    "RebootArgument": "string",
    "RefreshOnReload": "string",
    "ReloadSignal": "signal",
    "RemainAfterExit": "bool",
    "Restart": "enum",
    "RestartForceExitStatus": "exit-status",
    "RestartMaxDelaySec": "timespan",
    "RestartMode": "enum",
    "RestartPreventExitStatus": "exit-status",
    "RestartSec": "timespan",
    "RestartSteps": "int",
    "RootDirectoryStartOnly": "bool",
    "RuntimeMaxSec": "timespan",
    "RuntimeRandomizedExtraSec": "timespan",
    "Sockets": "unit-list",
    "StartLimitAction": "enum",
    "StartLimitBurst": "int",
    "StartLimitInterval": "timespan",
    "SuccessExitStatus": "exit-status",
    "SysVStartPriority": "string",
    "TimeoutAbortSec": "timespan",
    "TimeoutSec": "timespan",
    "TimeoutStartFailureMode": "enum",
    "TimeoutStartSec": "timespan",
    "TimeoutStopFailureMode": "enum",
    "TimeoutStopSec": "timespan",
    "Type": "enum",
    "USBFunctionDescriptors": "path",
    "USBFunctionStrings": "path",
    "WatchdogSec": "timespan",
}

# keys only [Socket] has
_SOCKET_KEYS: dict[str, str] = {
    "Accept": "bool",
    "AcceptFileDescriptors": "bool",
    "Backlog": "int",
    "BindIPv6Only": "enum",
    "BindToDevice": "string",
    "Broadcast": "bool",
    "DeferAcceptSec": "timespan",
    "DeferTrigger": "enum",
    "DeferTriggerMaxSec": "timespan",
    "DirectoryMode": "string",
    "ExecStartPost": "exec",
    "ExecStartPre": "exec",
    "ExecStopPost": "exec",
    "ExecStopPre": "exec",
    "FileDescriptorName": "string",
    "FlushPending": "bool",
    "FreeBind": "bool",
    "IPTOS": "enum",
    "IPTTL": "int",
    "KeepAlive": "bool",
    "KeepAliveIntervalSec": "timespan",
    "KeepAliveProbes": "int",
    "KeepAliveTimeSec": "timespan",
    "ListenDatagram": "string",
    "ListenFIFO": "string",
    "ListenMessageQueue": "string",
    "ListenNetlink": "string",
    "ListenSequentialPacket": "string",
    "ListenSpecial": "string",
    "ListenStream": "string",
    "ListenUSBFunction": "string",
    "Mark": "int",
    "MaxConnections": "int",
    "MaxConnectionsPerSource": "int",
    "MessageQueueMaxMessages": "int",
    "MessageQueueMessageSize": "int",
    "NoDelay": "bool",
    "PassCredentials": "bool",
    "PassFileDescriptorsToExec": "bool",
    "PassPIDFD": "bool",
    "PassPacketInfo": "bool",
    "PassSecurity": "bool",
    "PipeSize": "size",
    "PollLimitBurst": "int",
    "PollLimitIntervalSec": "timespan",
    "Priority": "int",
    "ReceiveBuffer": "size",
    "RemoveOnStop": "bool",
    "ReusePort": "bool",
    "SELinuxContextFromNet": "bool",
    "SendBuffer": "size",
    "Service": "unit-list",
    "SmackLabel": "string",
    "SmackLabelIPIn": "string",
    "SmackLabelIPOut": "string",
    "SocketGroup": "string",
    "SocketMode": "string",
    "SocketProtocol": "string",
    "SocketUser": "string",
    "Symlinks": "string",
    "TCPCongestion": "string",
    "TimeoutSec": "timespan",
    "Timestamping": "enum",
    "Transparent": "bool",
    "TriggerLimitBurst": "int",
    "TriggerLimitIntervalSec": "timespan",
    "Writable": "bool",
}

# keys only [Timer] has
_TIMER_KEYS: dict[str, str] = {
    "AccuracySec": "timespan",
    "DeferReactivation": "bool",
    "FixedRandomDelay": "bool",
    "OnActiveSec": "timespan",
    "OnBootSec": "timespan",
    "OnCalendar": "string",
    "OnClockChange": "bool",
    "OnStartupSec": "timespan",
    "OnTimezoneChange": "bool",
    "OnUnitActiveSec": "timespan",
    "OnUnitInactiveSec": "timespan",
    "Persistent": "bool",
    "RandomizedDelaySec": "timespan",
    "RandomizedOffsetSec": "timespan",
    "RemainAfterElapse": "bool",
    "Unit": "unit-list",
    "WakeSystem": "bool",
}

# keys only [Path] has
_PATH_KEYS: dict[str, str] = {
    "DirectoryMode": "string",
    "DirectoryNotEmpty": "path",
    "MakeDirectory": "bool",
    "PathChanged": "path",
    "PathExists": "path",
    "PathExistsGlob": "path",
    "PathModified": "path",
    "TriggerLimitBurst": "int",
    "TriggerLimitIntervalSec": "timespan",
    "Unit": "unit-list",
}

# keys only [Mount] has
_MOUNT_KEYS: dict[str, str] = {
    "DirectoryMode": "string",
    "ForceUnmount": "bool",
    "LazyUnmount": "bool",
    "Options": "string",
    "ReadWriteOnly": "bool",
    "SloppyOptions": "bool",
    "TimeoutSec": "timespan",
    "Type": "string",
    "What": "string",
    "Where": "path",
}

# keys only [Automount] has
_AUTOMOUNT_KEYS: dict[str, str] = {
    "DirectoryMode": "string",
    "ExtraOptions": "string",
    "TimeoutIdleSec": "timespan",
    "Where": "path",
}

# keys only [Swap] has
_SWAP_KEYS: dict[str, str] = {
    "Options": "string",
    "Priority": "int",
    "TimeoutSec": "timespan",
    "What": "string",
}

# keys only [Slice] has
_SLICE_KEYS: dict[str, str] = {
    "ConcurrencyHardMax": "string",
    "ConcurrencySoftMax": "string",
}

# keys only [Scope] has
_SCOPE_KEYS: dict[str, str] = {
    "OOMPolicy": "enum",
    "RuntimeMaxSec": "timespan",
    "RuntimeRandomizedExtraSec": "timespan",
    "TimeoutStopSec": "timespan",
}

# keys only [Install] has
_INSTALL_KEYS: dict[str, str] = {
    "Alias": "unit-list",
    "Also": "unit-list",
    "DefaultInstance": "string",
    "RequiredBy": "unit-list",
    "UpheldBy": "unit-list",
    "WantedBy": "unit-list",
}

# section -> key -> value kind
SECTION_KEYS: dict[str, dict[str, str]] = {
    "Unit": {**_UNIT_KEYS},
    "Service": {**_EXEC_CONTEXT, **_CGROUP_CONTEXT, **_KILL_CONTEXT, **_SERVICE_KEYS},
    "Socket": {**_EXEC_CONTEXT, **_CGROUP_CONTEXT, **_KILL_CONTEXT, **_SOCKET_KEYS},
    "Timer": {**_TIMER_KEYS},
    "Path": {**_PATH_KEYS},
    "Mount": {**_EXEC_CONTEXT, **_CGROUP_CONTEXT, **_KILL_CONTEXT, **_MOUNT_KEYS},
    "Automount": {**_AUTOMOUNT_KEYS},
    "Swap": {**_EXEC_CONTEXT, **_CGROUP_CONTEXT, **_KILL_CONTEXT, **_SWAP_KEYS},
    "Slice": {**_CGROUP_CONTEXT, **_SLICE_KEYS},
    "Scope": {**_CGROUP_CONTEXT, **_KILL_CONTEXT, **_SCOPE_KEYS},
    "Install": {**_INSTALL_KEYS},
}

# accepted values, per systemd parser (entries ending in ':' are prefixes)
_E_COLLECT_MODE: tuple[str, ...] = ("inactive", "inactive-or-failed")
_E_CPUSET_PARTITION: tuple[str, ...] = ("member", "root", "isolated")
_E_DEVICE_POLICY: tuple[str, ...] = ("auto", "closed", "strict")
_E_EMERGENCY_ACTION: tuple[str, ...] = (
    "none", "exit", "exit-force", "reboot", "reboot-force", "reboot-immediate", "poweroff",
    "poweroff-force", "poweroff-immediate", "soft-reboot", "soft-reboot-force", "kexec",
    "kexec-force", "halt", "halt-force", "halt-immediate",
)
_E_EXEC_CPU_SCHED_POLICY: tuple[str, ...] = ("other", "batch", "idle", "fifo", "ext", "rr")
_E_EXEC_INPUT: tuple[str, ...] = (
    "null", "tty", "tty-force", "tty-fail", "socket", "fd", "data", "file", "fd:", "file:",
)
_E_EXEC_IO_CLASS: tuple[str, ...] = ("none", "realtime", "best-effort", "idle")
_E_EXEC_KEYRING_MODE: tuple[str, ...] = ("inherit", "private", "shared")
_E_EXEC_MEMORY_THP: tuple[str, ...] = ("inherit", "disable", "madvise", "system")
_E_EXEC_MOUNT_PROPAGATION_FLAG: tuple[str, ...] = ("shared", "slave", "private")
_E_EXEC_OUTPUT: tuple[str, ...] = (
    "inherit", "null", "tty", "kmsg", "kmsg+console", "journal", "journal+console", "socket", "fd",
    "file", "append", "truncate", "fd:", "file:", "append:", "truncate:", "syslog",
    "syslog+console",
)
_E_EXEC_PRESERVE_MODE: tuple[str, ...] = (
    "no", "yes", "restart", "on-success", "true", "false", "on", "off", "1", "0",
)
_E_EXEC_UTMP_MODE: tuple[str, ...] = ("init", "login", "user")
_E_IP_TOS: tuple[str, ...] = ("low-delay", "throughput", "reliability", "low-cost")
_E_JOB_MODE: tuple[str, ...] = (
    "fail", "lenient", "replace", "replace-irreversibly", "isolate", "flush", "ignore-dependencies",
    "ignore-requirements", "triggering", "restart-dependencies",
)
_E_KILL_MODE: tuple[str, ...] = ("control-group", "process", "mixed", "none")
_E_LOG_FACILITY: tuple[str, ...] = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)
_E_LOG_LEVEL: tuple[str, ...] = (
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
)
_E_MANAGED_OOM_MODE: tuple[str, ...] = ("auto", "kill")
_E_MANAGED_OOM_PREFERENCE: tuple[str, ...] = ("none", "avoid", "omit")
_E_NOTIFY_ACCESS: tuple[str, ...] = ("none", "main", "exec", "all")
_E_NUMA_POLICY: tuple[str, ...] = ("default", "preferred", "bind", "interleave", "local")
_E_OOM_POLICY: tuple[str, ...] = ("continue", "stop", "kill")
_E_PRESSURE_WATCH: tuple[str, ...] = (
    "no", "yes", "auto", "skip", "true", "false", "on", "off", "1", "0",
)
_E_PRIVATE_BPF: tuple[str, ...] = ("no", "yes", "true", "false", "on", "off", "1", "0")
_E_PRIVATE_PIDS: tuple[str, ...] = ("no", "yes", "true", "false", "on", "off", "1", "0")
_E_PRIVATE_TMP: tuple[str, ...] = (
    "no", "connected", "disconnected", "yes", "true", "false", "on", "off", "1", "0",
)
_E_PRIVATE_USERS: tuple[str, ...] = (
    "no", "self", "identity", "full", "managed", "yes", "true", "false", "on", "off", "1", "0",
)
_E_PROC_SUBSET: tuple[str, ...] = ("all", "pid")
_E_PROTECT_CONTROL_GROUPS: tuple[str, ...] = (
    "no", "yes", "private", "strict", "true", "false", "on", "off", "1", "0",
)
_E_PROTECT_HOME: tuple[str, ...] = (
    "no", "yes", "read-only", "tmpfs", "true", "false", "on", "off", "1", "0",
)
_E_PROTECT_HOSTNAME: tuple[str, ...] = (
    "no", "yes", "private", "yes:", "private:", "true", "false", "on", "off", "1", "0",
)
_E_PROTECT_PROC: tuple[str, ...] = ("default", "noaccess", "invisible", "ptraceable")
_E_PROTECT_SYSTEM: tuple[str, ...] = (
    "no", "yes", "full", "strict", "true", "false", "on", "off", "1", "0",
)
_E_SERVICE_EXIT_TYPE: tuple[str, ...] = ("main", "cgroup")
_E_SERVICE_RESTART: tuple[str, ...] = (
    "no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always",
)
_E_SERVICE_RESTART_MODE: tuple[str, ...] = ("normal", "direct", "debug")
_E_SERVICE_TIMEOUT_FAILURE_MODE: tuple[str, ...] = ("terminate", "abort", "kill")
_E_SERVICE_TYPE: tuple[str, ...] = (
    "simple", "forking", "oneshot", "dbus", "notify", "notify-reload", "idle", "exec",
)
_E_SOCKET_BIND: tuple[str, ...] = (
    "default", "both", "ipv6-only", "yes", "no", "true", "false", "on", "off", "1", "0",
)
_E_SOCKET_DEFER_TRIGGER: tuple[str, ...] = (
    "no", "yes", "patient", "true", "false", "on", "off", "1", "0",
)
_E_SOCKET_TIMESTAMPING: tuple[str, ...] = ("off", "us", "ns")

# (section, key) -> accepted values of an enum setting
ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Unit", "CollectMode"): _E_COLLECT_MODE,
    ("Unit", "FailureAction"): _E_EMERGENCY_ACTION,
    ("Unit", "JobTimeoutAction"): _E_EMERGENCY_ACTION,
    ("Unit", "OnFailureJobMode"): _E_JOB_MODE,
    ("Unit", "OnSuccessJobMode"): _E_JOB_MODE,
    ("Unit", "StartLimitAction"): _E_EMERGENCY_ACTION,
    ("Unit", "SuccessAction"): _E_EMERGENCY_ACTION,
    ("Service", "CPUPressureWatch"): _E_PRESSURE_WATCH,
    ("Service", "CPUSchedulingPolicy"): _E_EXEC_CPU_SCHED_POLICY,
    ("Service", "CPUSetPartition"): _E_CPUSET_PARTITION,
    ("Service", "DevicePolicy"): _E_DEVICE_POLICY,
    ("Service", "ExitType"): _E_SERVICE_EXIT_TYPE,
    ("Service", "FailureAction"): _E_EMERGENCY_ACTION,
    ("Service", "FileDescriptorStorePreserve"): _E_EXEC_PRESERVE_MODE,
    ("Service", "IOPressureWatch"): _E_PRESSURE_WATCH,
    ("Service", "IOSchedulingClass"): _E_EXEC_IO_CLASS,
    ("Service", "KeyringMode"): _E_EXEC_KEYRING_MODE,
    ("Service", "KillMode"): _E_KILL_MODE,
    ("Service", "LogLevelMax"): _E_LOG_LEVEL,
    ("Service", "ManagedOOMMemoryPressure"): _E_MANAGED_OOM_MODE,
    ("Service", "ManagedOOMPreference"): _E_MANAGED_OOM_PREFERENCE,
    ("Service", "ManagedOOMSwap"): _E_MANAGED_OOM_MODE,
    ("Service", "MemoryPressureWatch"): _E_PRESSURE_WATCH,
    ("Service", "MemoryTHP"): _E_EXEC_MEMORY_THP,
    ("Service", "MountFlags"): _E_EXEC_MOUNT_PROPAGATION_FLAG,
    ("Service", "NUMAPolicy"): _E_NUMA_POLICY,
    ("Service", "NotifyAccess"): _E_NOTIFY_ACCESS,
    ("Service", "OOMPolicy"): _E_OOM_POLICY,
    ("Service", "PrivateBPF"): _E_PRIVATE_BPF,
    ("Service", "PrivatePIDs"): _E_PRIVATE_PIDS,
    ("Service", "PrivateTmp"): _E_PRIVATE_TMP,
    ("Service", "PrivateUsers"): _E_PRIVATE_USERS,
    ("Service", "ProcSubset"): _E_PROC_SUBSET,
    ("Service", "ProtectControlGroups"): _E_PROTECT_CONTROL_GROUPS,
    ("Service", "ProtectHome"): _E_PROTECT_HOME,
    ("Service", "ProtectHostname"): _E_PROTECT_HOSTNAME,
    ("Service", "ProtectProc"): _E_PROTECT_PROC,
    ("Service", "ProtectSystem"): _E_PROTECT_SYSTEM,
    ("Service", "Restart"): _E_SERVICE_RESTART,
    ("Service", "RestartMode"): _E_SERVICE_RESTART_MODE,
    ("Service", "RuntimeDirectoryPreserve"): _E_EXEC_PRESERVE_MODE,
    ("Service", "StandardError"): _E_EXEC_OUTPUT,
    ("Service", "StandardInput"): _E_EXEC_INPUT,
    ("Service", "StandardOutput"): _E_EXEC_OUTPUT,
    ("Service", "StartLimitAction"): _E_EMERGENCY_ACTION,
    ("Service", "SyslogFacility"): _E_LOG_FACILITY,
    ("Service", "SyslogLevel"): _E_LOG_LEVEL,
    ("Service", "TimeoutStartFailureMode"): _E_SERVICE_TIMEOUT_FAILURE_MODE,
    ("Service", "TimeoutStopFailureMode"): _E_SERVICE_TIMEOUT_FAILURE_MODE,
    ("Service", "Type"): _E_SERVICE_TYPE,
    ("Service", "UtmpMode"): _E_EXEC_UTMP_MODE,
    ("Socket", "BindIPv6Only"): _E_SOCKET_BIND,
    ("Socket", "CPUPressureWatch"): _E_PRESSURE_WATCH,
    ("Socket", "CPUSchedulingPolicy"): _E_EXEC_CPU_SCHED_POLICY,
    ("Socket", "CPUSetPartition"): _E_CPUSET_PARTITION,
    ("Socket", "DeferTrigger"): _E_SOCKET_DEFER_TRIGGER,
    ("Socket", "DevicePolicy"): _E_DEVICE_POLICY,
    ("Socket", "IOPressureWatch"): _E_PRESSURE_WATCH,
    ("Socket", "IOSchedulingClass"): _E_EXEC_IO_CLASS,
    ("Socket", "IPTOS"): _E_IP_TOS,
    ("Socket", "KeyringMode"): _E_EXEC_KEYRING_MODE,
    ("Socket", "KillMode"): _E_KILL_MODE,
    ("Socket", "LogLevelMax"): _E_LOG_LEVEL,
    ("Socket", "ManagedOOMMemoryPressure"): _E_MANAGED_OOM_MODE,
    ("Socket", "ManagedOOMPreference"): _E_MANAGED_OOM_PREFERENCE,
    ("Socket", "ManagedOOMSwap"): _E_MANAGED_OOM_MODE,
    ("Socket", "MemoryPressureWatch"): _E_PRESSURE_WATCH,
    ("Socket", "MemoryTHP"): _E_EXEC_MEMORY_THP,
    ("Socket", "MountFlags"): _E_EXEC_MOUNT_PROPAGATION_FLAG,
    ("Socket", "NUMAPolicy"): _E_NUMA_POLICY,
    ("Socket", "PrivateBPF"): _E_PRIVATE_BPF,
    ("Socket", "PrivatePIDs"): _E_PRIVATE_PIDS,
    ("Socket", "PrivateTmp"): _E_PRIVATE_TMP,
    ("Socket", "PrivateUsers"): _E_PRIVATE_USERS,
    ("Socket", "ProcSubset"): _E_PROC_SUBSET,
    ("Socket", "ProtectControlGroups"): _E_PROTECT_CONTROL_GROUPS,
    ("Socket", "ProtectHome"): _E_PROTECT_HOME,
    ("Socket", "ProtectHostname"): _E_PROTECT_HOSTNAME,
    ("Socket", "ProtectProc"): _E_PROTECT_PROC,
    ("Socket", "ProtectSystem"): _E_PROTECT_SYSTEM,
    ("Socket", "RuntimeDirectoryPreserve"): _E_EXEC_PRESERVE_MODE,
    ("Socket", "StandardError"): _E_EXEC_OUTPUT,
    ("Socket", "StandardInput"): _E_EXEC_INPUT,
    ("Socket", "StandardOutput"): _E_EXEC_OUTPUT,
    ("Socket", "SyslogFacility"): _E_LOG_FACILITY,
    ("Socket", "SyslogLevel"): _E_LOG_LEVEL,
    ("Socket", "Timestamping"): _E_SOCKET_TIMESTAMPING,
    ("Socket", "UtmpMode"): _E_EXEC_UTMP_MODE,
    ("Mount", "CPUPressureWatch"): _E_PRESSURE_WATCH,
    ("Mount", "CPUSchedulingPolicy"): _E_EXEC_CPU_SCHED_POLICY,
    ("Mount", "CPUSetPartition"): _E_CPUSET_PARTITION,
    ("Mount", "DevicePolicy"): _E_DEVICE_POLICY,
    ("Mount", "IOPressureWatch"): _E_PRESSURE_WATCH,
    ("Mount", "IOSchedulingClass"): _E_EXEC_IO_CLASS,
    ("Mount", "KeyringMode"): _E_EXEC_KEYRING_MODE,
    ("Mount", "KillMode"): _E_KILL_MODE,
    ("Mount", "LogLevelMax"): _E_LOG_LEVEL,
    ("Mount", "ManagedOOMMemoryPressure"): _E_MANAGED_OOM_MODE,
    ("Mount", "ManagedOOMPreference"): _E_MANAGED_OOM_PREFERENCE,
    ("Mount", "ManagedOOMSwap"): _E_MANAGED_OOM_MODE,
    ("Mount", "MemoryPressureWatch"): _E_PRESSURE_WATCH,
    ("Mount", "MemoryTHP"): _E_EXEC_MEMORY_THP,
    ("Mount", "MountFlags"): _E_EXEC_MOUNT_PROPAGATION_FLAG,
    ("Mount", "NUMAPolicy"): _E_NUMA_POLICY,
    ("Mount", "PrivateBPF"): _E_PRIVATE_BPF,
    ("Mount", "PrivatePIDs"): _E_PRIVATE_PIDS,
    ("Mount", "PrivateTmp"): _E_PRIVATE_TMP,
    ("Mount", "PrivateUsers"): _E_PRIVATE_USERS,
    ("Mount", "ProcSubset"): _E_PROC_SUBSET,
    ("Mount", "ProtectControlGroups"): _E_PROTECT_CONTROL_GROUPS,
    ("Mount", "ProtectHome"): _E_PROTECT_HOME,
    ("Mount", "ProtectHostname"): _E_PROTECT_HOSTNAME,
    ("Mount", "ProtectProc"): _E_PROTECT_PROC,
    ("Mount", "ProtectSystem"): _E_PROTECT_SYSTEM,
    ("Mount", "RuntimeDirectoryPreserve"): _E_EXEC_PRESERVE_MODE,
    ("Mount", "StandardError"): _E_EXEC_OUTPUT,
    ("Mount", "StandardInput"): _E_EXEC_INPUT,
    ("Mount", "StandardOutput"): _E_EXEC_OUTPUT,
    ("Mount", "SyslogFacility"): _E_LOG_FACILITY,
    ("Mount", "SyslogLevel"): _E_LOG_LEVEL,
    ("Mount", "UtmpMode"): _E_EXEC_UTMP_MODE,
    ("Swap", "CPUPressureWatch"): _E_PRESSURE_WATCH,
    ("Swap", "CPUSchedulingPolicy"): _E_EXEC_CPU_SCHED_POLICY,
    ("Swap", "CPUSetPartition"): _E_CPUSET_PARTITION,
    ("Swap", "DevicePolicy"): _E_DEVICE_POLICY,
    ("Swap", "IOPressureWatch"): _E_PRESSURE_WATCH,
    ("Swap", "IOSchedulingClass"): _E_EXEC_IO_CLASS,
    ("Swap", "KeyringMode"): _E_EXEC_KEYRING_MODE,
    ("Swap", "KillMode"): _E_KILL_MODE,
    ("Swap", "LogLevelMax"): _E_LOG_LEVEL,
    ("Swap", "ManagedOOMMemoryPressure"): _E_MANAGED_OOM_MODE,
    ("Swap", "ManagedOOMPreference"): _E_MANAGED_OOM_PREFERENCE,
    ("Swap", "ManagedOOMSwap"): _E_MANAGED_OOM_MODE,
    ("Swap", "MemoryPressureWatch"): _E_PRESSURE_WATCH,
    ("Swap", "MemoryTHP"): _E_EXEC_MEMORY_THP,
    ("Swap", "MountFlags"): _E_EXEC_MOUNT_PROPAGATION_FLAG,
    ("Swap", "NUMAPolicy"): _E_NUMA_POLICY,
    ("Swap", "PrivateBPF"): _E_PRIVATE_BPF,
    ("Swap", "PrivatePIDs"): _E_PRIVATE_PIDS,
    ("Swap", "PrivateTmp"): _E_PRIVATE_TMP,
    ("Swap", "PrivateUsers"): _E_PRIVATE_USERS,
    ("Swap", "ProcSubset"): _E_PROC_SUBSET,
    ("Swap", "ProtectControlGroups"): _E_PROTECT_CONTROL_GROUPS,
    ("Swap", "ProtectHome"): _E_PROTECT_HOME,
    ("Swap", "ProtectHostname"): _E_PROTECT_HOSTNAME,
    ("Swap", "ProtectProc"): _E_PROTECT_PROC,
    ("Swap", "ProtectSystem"): _E_PROTECT_SYSTEM,
    ("Swap", "RuntimeDirectoryPreserve"): _E_EXEC_PRESERVE_MODE,
    ("Swap", "StandardError"): _E_EXEC_OUTPUT,
    ("Swap", "StandardInput"): _E_EXEC_INPUT,
    ("Swap", "StandardOutput"): _E_EXEC_OUTPUT,
    ("Swap", "SyslogFacility"): _E_LOG_FACILITY,
    ("Swap", "SyslogLevel"): _E_LOG_LEVEL,
    ("Swap", "UtmpMode"): _E_EXEC_UTMP_MODE,
    ("Slice", "CPUPressureWatch"): _E_PRESSURE_WATCH,
    ("Slice", "CPUSetPartition"): _E_CPUSET_PARTITION,
    ("Slice", "DevicePolicy"): _E_DEVICE_POLICY,
    ("Slice", "IOPressureWatch"): _E_PRESSURE_WATCH,
    ("Slice", "ManagedOOMMemoryPressure"): _E_MANAGED_OOM_MODE,
    ("Slice", "ManagedOOMPreference"): _E_MANAGED_OOM_PREFERENCE,
    ("Slice", "ManagedOOMSwap"): _E_MANAGED_OOM_MODE,
    ("Slice", "MemoryPressureWatch"): _E_PRESSURE_WATCH,
    ("Scope", "CPUPressureWatch"): _E_PRESSURE_WATCH,
    ("Scope", "CPUSetPartition"): _E_CPUSET_PARTITION,
    ("Scope", "DevicePolicy"): _E_DEVICE_POLICY,
    ("Scope", "IOPressureWatch"): _E_PRESSURE_WATCH,
    ("Scope", "KillMode"): _E_KILL_MODE,
    ("Scope", "ManagedOOMMemoryPressure"): _E_MANAGED_OOM_MODE,
    ("Scope", "ManagedOOMPreference"): _E_MANAGED_OOM_PREFERENCE,
    ("Scope", "ManagedOOMSwap"): _E_MANAGED_OOM_MODE,
    ("Scope", "MemoryPressureWatch"): _E_PRESSURE_WATCH,
    ("Scope", "OOMPolicy"): _E_OOM_POLICY,
}

# enum settings that also take a boolean (yes/no/true/false/on/off/1/0)
ENUMS_ACCEPT_BOOL: frozenset[tuple[str, str]] = frozenset({
    ("Service", "CPUPressureWatch"),
    ("Service", "FileDescriptorStorePreserve"),
    ("Service", "IOPressureWatch"),
    ("Service", "MemoryPressureWatch"),
    ("Service", "PrivateBPF"),
    ("Service", "PrivatePIDs"),
    ("Service", "PrivateTmp"),
    ("Service", "PrivateUsers"),
    ("Service", "ProtectControlGroups"),
    ("Service", "ProtectHome"),
    ("Service", "ProtectHostname"),
    ("Service", "ProtectSystem"),
    ("Service", "RuntimeDirectoryPreserve"),
    ("Socket", "BindIPv6Only"),
    ("Socket", "CPUPressureWatch"),
    ("Socket", "DeferTrigger"),
    ("Socket", "IOPressureWatch"),
    ("Socket", "MemoryPressureWatch"),
    ("Socket", "PrivateBPF"),
    ("Socket", "PrivatePIDs"),
    ("Socket", "PrivateTmp"),
    ("Socket", "PrivateUsers"),
    ("Socket", "ProtectControlGroups"),
    ("Socket", "ProtectHome"),
    ("Socket", "ProtectHostname"),
    ("Socket", "ProtectSystem"),
    ("Socket", "RuntimeDirectoryPreserve"),
    ("Mount", "CPUPressureWatch"),
    ("Mount", "IOPressureWatch"),
    ("Mount", "MemoryPressureWatch"),
    ("Mount", "PrivateBPF"),
    ("Mount", "PrivatePIDs"),
    ("Mount", "PrivateTmp"),
    ("Mount", "PrivateUsers"),
    ("Mount", "ProtectControlGroups"),
    ("Mount", "ProtectHome"),
    ("Mount", "ProtectHostname"),
    ("Mount", "ProtectSystem"),
    ("Mount", "RuntimeDirectoryPreserve"),
    ("Swap", "CPUPressureWatch"),
    ("Swap", "IOPressureWatch"),
    ("Swap", "MemoryPressureWatch"),
    ("Swap", "PrivateBPF"),
    ("Swap", "PrivatePIDs"),
    ("Swap", "PrivateTmp"),
    ("Swap", "PrivateUsers"),
    ("Swap", "ProtectControlGroups"),
    ("Swap", "ProtectHome"),
    ("Swap", "ProtectHostname"),
    ("Swap", "ProtectSystem"),
    ("Swap", "RuntimeDirectoryPreserve"),
    ("Slice", "CPUPressureWatch"),
    ("Slice", "IOPressureWatch"),
    ("Slice", "MemoryPressureWatch"),
    ("Scope", "CPUPressureWatch"),
    ("Scope", "IOPressureWatch"),
    ("Scope", "MemoryPressureWatch"),
})

# enum settings that also take a plain number (e.g. LogLevelMax=7)
ENUMS_ACCEPT_INT: frozenset[tuple[str, str]] = frozenset({
    ("Service", "CPUSchedulingPolicy"),
    ("Service", "IOSchedulingClass"),
    ("Service", "LogLevelMax"),
    ("Service", "SyslogFacility"),
    ("Service", "SyslogLevel"),
    ("Socket", "CPUSchedulingPolicy"),
    ("Socket", "IOSchedulingClass"),
    ("Socket", "IPTOS"),
    ("Socket", "LogLevelMax"),
    ("Socket", "SyslogFacility"),
    ("Socket", "SyslogLevel"),
    ("Mount", "CPUSchedulingPolicy"),
    ("Mount", "IOSchedulingClass"),
    ("Mount", "LogLevelMax"),
    ("Mount", "SyslogFacility"),
    ("Mount", "SyslogLevel"),
    ("Swap", "CPUSchedulingPolicy"),
    ("Swap", "IOSchedulingClass"),
    ("Swap", "LogLevelMax"),
    ("Swap", "SyslogFacility"),
    ("Swap", "SyslogLevel"),
})

# (section, key) -> one-line message naming the replacement
DEPRECATED: dict[tuple[str, str], str] = {
    ("Unit", "BindTo"): "BindTo= is deprecated; use BindsTo=",
    ("Unit", "IgnoreOnSnapshot"): "IgnoreOnSnapshot= is obsolete and ignored; snapshot units no longer exist; drop the line",
    ("Unit", "OnFailureIsolate"): "OnFailureIsolate= is deprecated; use OnFailureJobMode=isolate",
    ("Unit", "PropagateReloadFrom"): "PropagateReloadFrom= is deprecated; use ReloadPropagatedFrom=",
    ("Unit", "PropagateReloadTo"): "PropagateReloadTo= is deprecated; use PropagatesReloadTo=",
    ("Unit", "RequiresOverridable"): "RequiresOverridable= is deprecated; use Requires=",
    ("Unit", "RequisiteOverridable"): "RequisiteOverridable= is deprecated; use Requisite=",
    ("Unit", "StartLimitInterval"): "StartLimitInterval= is deprecated; use StartLimitIntervalSec=",
    ("Service", "BlockIOAccounting"): "BlockIOAccounting= is deprecated; use IOAccounting= (systemd v261 ignores it)",
    ("Service", "BlockIODeviceWeight"): "BlockIODeviceWeight= is deprecated; use IODeviceWeight= (systemd v261 ignores it)",
    ("Service", "BlockIOReadBandwidth"): "BlockIOReadBandwidth= is deprecated; use IOReadBandwidthMax= (systemd v261 ignores it)",
    ("Service", "BlockIOWeight"): "BlockIOWeight= is deprecated; use IOWeight= (systemd v261 ignores it)",
    ("Service", "BlockIOWriteBandwidth"): "BlockIOWriteBandwidth= is deprecated; use IOWriteBandwidthMax= (systemd v261 ignores it)",
    ("Service", "BusPolicy"): "BusPolicy= is obsolete and ignored; kdbus is gone; drop the line",
    ("Service", "CPUAccounting"): "CPUAccounting= is deprecated; CPU accounting is always on; drop the line (systemd v261 ignores it)",
    ("Service", "CPUShares"): "CPUShares= is deprecated; use CPUWeight= (systemd v261 ignores it)",
    ("Service", "Capabilities"): "Capabilities= is obsolete and ignored; use CapabilityBoundingSet= and AmbientCapabilities=",
    ("Service", "DefaultMemoryLow"): "DefaultMemoryLow= is deprecated; set MemoryLow= on the child units instead (systemd v261 ignores it)",
    ("Service", "DefaultMemoryMin"): "DefaultMemoryMin= is deprecated; set MemoryMin= on the child units instead (systemd v261 ignores it)",
    ("Service", "DefaultStartupMemoryLow"): "DefaultStartupMemoryLow= is obsolete and ignored; set StartupMemoryLow= on the child units instead",
    ("Service", "FailureAction"): "FailureAction= in [Service] is deprecated; use FailureAction= in [Unit]",
    ("Service", "InaccessibleDirectories"): "InaccessibleDirectories= is deprecated; use InaccessiblePaths=",
    ("Service", "MemoryLimit"): "MemoryLimit= is deprecated; use MemoryMax= (systemd v261 ignores it)",
    ("Service", "NetClass"): "NetClass= is obsolete and ignored",
    ("Service", "PermissionsStartOnly"): "PermissionsStartOnly= is deprecated; use the '+' prefix on ExecStartPre= and friends",
    ("Service", "ReadOnlyDirectories"): "ReadOnlyDirectories= is deprecated; use ReadOnlyPaths=",
    ("Service", "ReadWriteDirectories"): "ReadWriteDirectories= is deprecated; use ReadWritePaths=",
    ("Service", "RebootArgument"): "RebootArgument= in [Service] is deprecated; use RebootArgument= in [Unit]",
    ("Service", "StartLimitAction"): "StartLimitAction= in [Service] is deprecated; use StartLimitAction= in [Unit]",
    ("Service", "StartLimitBurst"): "StartLimitBurst= in [Service] is deprecated; use StartLimitBurst= in [Unit]",
    ("Service", "StartLimitInterval"): "StartLimitInterval= in [Service] is deprecated; use StartLimitIntervalSec= in [Unit]",
    ("Service", "StartupBlockIOWeight"): "StartupBlockIOWeight= is deprecated; use StartupIOWeight= (systemd v261 ignores it)",
    ("Service", "StartupCPUShares"): "StartupCPUShares= is deprecated; use StartupCPUWeight= (systemd v261 ignores it)",
    ("Service", "SysVStartPriority"): "SysVStartPriority= is obsolete and ignored; ordering comes from After=/Before=; drop the line",
    ("Socket", "BlockIOAccounting"): "BlockIOAccounting= is deprecated; use IOAccounting= (systemd v261 ignores it)",
    ("Socket", "BlockIODeviceWeight"): "BlockIODeviceWeight= is deprecated; use IODeviceWeight= (systemd v261 ignores it)",
    ("Socket", "BlockIOReadBandwidth"): "BlockIOReadBandwidth= is deprecated; use IOReadBandwidthMax= (systemd v261 ignores it)",
    ("Socket", "BlockIOWeight"): "BlockIOWeight= is deprecated; use IOWeight= (systemd v261 ignores it)",
    ("Socket", "BlockIOWriteBandwidth"): "BlockIOWriteBandwidth= is deprecated; use IOWriteBandwidthMax= (systemd v261 ignores it)",
    ("Socket", "CPUAccounting"): "CPUAccounting= is deprecated; CPU accounting is always on; drop the line (systemd v261 ignores it)",
    ("Socket", "CPUShares"): "CPUShares= is deprecated; use CPUWeight= (systemd v261 ignores it)",
    ("Socket", "Capabilities"): "Capabilities= is obsolete and ignored; use CapabilityBoundingSet= and AmbientCapabilities=",
    ("Socket", "DefaultMemoryLow"): "DefaultMemoryLow= is deprecated; set MemoryLow= on the child units instead (systemd v261 ignores it)",
    ("Socket", "DefaultMemoryMin"): "DefaultMemoryMin= is deprecated; set MemoryMin= on the child units instead (systemd v261 ignores it)",
    ("Socket", "DefaultStartupMemoryLow"): "DefaultStartupMemoryLow= is obsolete and ignored; set StartupMemoryLow= on the child units instead",
    ("Socket", "InaccessibleDirectories"): "InaccessibleDirectories= is deprecated; use InaccessiblePaths=",
    ("Socket", "MemoryLimit"): "MemoryLimit= is deprecated; use MemoryMax= (systemd v261 ignores it)",
    ("Socket", "NetClass"): "NetClass= is obsolete and ignored",
    ("Socket", "ReadOnlyDirectories"): "ReadOnlyDirectories= is deprecated; use ReadOnlyPaths=",
    ("Socket", "ReadWriteDirectories"): "ReadWriteDirectories= is deprecated; use ReadWritePaths=",
    ("Socket", "StartupBlockIOWeight"): "StartupBlockIOWeight= is deprecated; use StartupIOWeight= (systemd v261 ignores it)",
    ("Socket", "StartupCPUShares"): "StartupCPUShares= is deprecated; use StartupCPUWeight= (systemd v261 ignores it)",
    ("Mount", "BlockIOAccounting"): "BlockIOAccounting= is deprecated; use IOAccounting= (systemd v261 ignores it)",
    ("Mount", "BlockIODeviceWeight"): "BlockIODeviceWeight= is deprecated; use IODeviceWeight= (systemd v261 ignores it)",
    ("Mount", "BlockIOReadBandwidth"): "BlockIOReadBandwidth= is deprecated; use IOReadBandwidthMax= (systemd v261 ignores it)",
    ("Mount", "BlockIOWeight"): "BlockIOWeight= is deprecated; use IOWeight= (systemd v261 ignores it)",
    ("Mount", "BlockIOWriteBandwidth"): "BlockIOWriteBandwidth= is deprecated; use IOWriteBandwidthMax= (systemd v261 ignores it)",
    ("Mount", "CPUAccounting"): "CPUAccounting= is deprecated; CPU accounting is always on; drop the line (systemd v261 ignores it)",
    ("Mount", "CPUShares"): "CPUShares= is deprecated; use CPUWeight= (systemd v261 ignores it)",
    ("Mount", "Capabilities"): "Capabilities= is obsolete and ignored; use CapabilityBoundingSet= and AmbientCapabilities=",
    ("Mount", "DefaultMemoryLow"): "DefaultMemoryLow= is deprecated; set MemoryLow= on the child units instead (systemd v261 ignores it)",
    ("Mount", "DefaultMemoryMin"): "DefaultMemoryMin= is deprecated; set MemoryMin= on the child units instead (systemd v261 ignores it)",
    ("Mount", "DefaultStartupMemoryLow"): "DefaultStartupMemoryLow= is obsolete and ignored; set StartupMemoryLow= on the child units instead",
    ("Mount", "InaccessibleDirectories"): "InaccessibleDirectories= is deprecated; use InaccessiblePaths=",
    ("Mount", "MemoryLimit"): "MemoryLimit= is deprecated; use MemoryMax= (systemd v261 ignores it)",
    ("Mount", "NetClass"): "NetClass= is obsolete and ignored",
    ("Mount", "ReadOnlyDirectories"): "ReadOnlyDirectories= is deprecated; use ReadOnlyPaths=",
    ("Mount", "ReadWriteDirectories"): "ReadWriteDirectories= is deprecated; use ReadWritePaths=",
    ("Mount", "StartupBlockIOWeight"): "StartupBlockIOWeight= is deprecated; use StartupIOWeight= (systemd v261 ignores it)",
    ("Mount", "StartupCPUShares"): "StartupCPUShares= is deprecated; use StartupCPUWeight= (systemd v261 ignores it)",
    ("Swap", "BlockIOAccounting"): "BlockIOAccounting= is deprecated; use IOAccounting= (systemd v261 ignores it)",
    ("Swap", "BlockIODeviceWeight"): "BlockIODeviceWeight= is deprecated; use IODeviceWeight= (systemd v261 ignores it)",
    ("Swap", "BlockIOReadBandwidth"): "BlockIOReadBandwidth= is deprecated; use IOReadBandwidthMax= (systemd v261 ignores it)",
    ("Swap", "BlockIOWeight"): "BlockIOWeight= is deprecated; use IOWeight= (systemd v261 ignores it)",
    ("Swap", "BlockIOWriteBandwidth"): "BlockIOWriteBandwidth= is deprecated; use IOWriteBandwidthMax= (systemd v261 ignores it)",
    ("Swap", "CPUAccounting"): "CPUAccounting= is deprecated; CPU accounting is always on; drop the line (systemd v261 ignores it)",
    ("Swap", "CPUShares"): "CPUShares= is deprecated; use CPUWeight= (systemd v261 ignores it)",
    ("Swap", "Capabilities"): "Capabilities= is obsolete and ignored; use CapabilityBoundingSet= and AmbientCapabilities=",
    ("Swap", "DefaultMemoryLow"): "DefaultMemoryLow= is deprecated; set MemoryLow= on the child units instead (systemd v261 ignores it)",
    ("Swap", "DefaultMemoryMin"): "DefaultMemoryMin= is deprecated; set MemoryMin= on the child units instead (systemd v261 ignores it)",
    ("Swap", "DefaultStartupMemoryLow"): "DefaultStartupMemoryLow= is obsolete and ignored; set StartupMemoryLow= on the child units instead",
    ("Swap", "InaccessibleDirectories"): "InaccessibleDirectories= is deprecated; use InaccessiblePaths=",
    ("Swap", "MemoryLimit"): "MemoryLimit= is deprecated; use MemoryMax= (systemd v261 ignores it)",
    ("Swap", "NetClass"): "NetClass= is obsolete and ignored",
    ("Swap", "ReadOnlyDirectories"): "ReadOnlyDirectories= is deprecated; use ReadOnlyPaths=",
    ("Swap", "ReadWriteDirectories"): "ReadWriteDirectories= is deprecated; use ReadWritePaths=",
    ("Swap", "StartupBlockIOWeight"): "StartupBlockIOWeight= is deprecated; use StartupIOWeight= (systemd v261 ignores it)",
    ("Swap", "StartupCPUShares"): "StartupCPUShares= is deprecated; use StartupCPUWeight= (systemd v261 ignores it)",
    ("Slice", "BlockIOAccounting"): "BlockIOAccounting= is deprecated; use IOAccounting= (systemd v261 ignores it)",
    ("Slice", "BlockIODeviceWeight"): "BlockIODeviceWeight= is deprecated; use IODeviceWeight= (systemd v261 ignores it)",
    ("Slice", "BlockIOReadBandwidth"): "BlockIOReadBandwidth= is deprecated; use IOReadBandwidthMax= (systemd v261 ignores it)",
    ("Slice", "BlockIOWeight"): "BlockIOWeight= is deprecated; use IOWeight= (systemd v261 ignores it)",
    ("Slice", "BlockIOWriteBandwidth"): "BlockIOWriteBandwidth= is deprecated; use IOWriteBandwidthMax= (systemd v261 ignores it)",
    ("Slice", "CPUAccounting"): "CPUAccounting= is deprecated; CPU accounting is always on; drop the line (systemd v261 ignores it)",
    ("Slice", "CPUShares"): "CPUShares= is deprecated; use CPUWeight= (systemd v261 ignores it)",
    ("Slice", "DefaultMemoryLow"): "DefaultMemoryLow= is deprecated; set MemoryLow= on the child units instead (systemd v261 ignores it)",
    ("Slice", "DefaultMemoryMin"): "DefaultMemoryMin= is deprecated; set MemoryMin= on the child units instead (systemd v261 ignores it)",
    ("Slice", "DefaultStartupMemoryLow"): "DefaultStartupMemoryLow= is obsolete and ignored; set StartupMemoryLow= on the child units instead",
    ("Slice", "MemoryLimit"): "MemoryLimit= is deprecated; use MemoryMax= (systemd v261 ignores it)",
    ("Slice", "NetClass"): "NetClass= is obsolete and ignored",
    ("Slice", "StartupBlockIOWeight"): "StartupBlockIOWeight= is deprecated; use StartupIOWeight= (systemd v261 ignores it)",
    ("Slice", "StartupCPUShares"): "StartupCPUShares= is deprecated; use StartupCPUWeight= (systemd v261 ignores it)",
    ("Scope", "BlockIOAccounting"): "BlockIOAccounting= is deprecated; use IOAccounting= (systemd v261 ignores it)",
    ("Scope", "BlockIODeviceWeight"): "BlockIODeviceWeight= is deprecated; use IODeviceWeight= (systemd v261 ignores it)",
    ("Scope", "BlockIOReadBandwidth"): "BlockIOReadBandwidth= is deprecated; use IOReadBandwidthMax= (systemd v261 ignores it)",
    ("Scope", "BlockIOWeight"): "BlockIOWeight= is deprecated; use IOWeight= (systemd v261 ignores it)",
    ("Scope", "BlockIOWriteBandwidth"): "BlockIOWriteBandwidth= is deprecated; use IOWriteBandwidthMax= (systemd v261 ignores it)",
    ("Scope", "CPUAccounting"): "CPUAccounting= is deprecated; CPU accounting is always on; drop the line (systemd v261 ignores it)",
    ("Scope", "CPUShares"): "CPUShares= is deprecated; use CPUWeight= (systemd v261 ignores it)",
    ("Scope", "DefaultMemoryLow"): "DefaultMemoryLow= is deprecated; set MemoryLow= on the child units instead (systemd v261 ignores it)",
    ("Scope", "DefaultMemoryMin"): "DefaultMemoryMin= is deprecated; set MemoryMin= on the child units instead (systemd v261 ignores it)",
    ("Scope", "DefaultStartupMemoryLow"): "DefaultStartupMemoryLow= is obsolete and ignored; set StartupMemoryLow= on the child units instead",
    ("Scope", "MemoryLimit"): "MemoryLimit= is deprecated; use MemoryMax= (systemd v261 ignores it)",
    ("Scope", "NetClass"): "NetClass= is obsolete and ignored",
    ("Scope", "StartupBlockIOWeight"): "StartupBlockIOWeight= is deprecated; use StartupIOWeight= (systemd v261 ignores it)",
    ("Scope", "StartupCPUShares"): "StartupCPUShares= is deprecated; use StartupCPUWeight= (systemd v261 ignores it)",
}

# --- END GENERATED DATA ---

# what systemd's parse_boolean() accepts (compared lowercased)
_BOOLS = frozenset({"1", "yes", "y", "true", "t", "on", "0", "no", "n", "false", "f", "off"})

_KEY_INDEX: dict[str, tuple[str, ...]] = {}
for _section, _keys in SECTION_KEYS.items():
    for _key in _keys:
        _KEY_INDEX[_key] = (*_KEY_INDEX.get(_key, ()), _section)
del _section, _keys, _key


def kind_of(section: str, key: str) -> str | None:
    """Return the value kind of ``key`` in ``[section]``, or None if systemd rejects it there."""
    return SECTION_KEYS.get(section, {}).get(key)


def sections_with(key: str) -> tuple[str, ...]:
    """Return the sections in which ``key`` is valid (empty if none), in SECTION_KEYS order."""
    return _KEY_INDEX.get(key, ())


def closest_keys(section: str, key: str, n: int = 3) -> list[str]:
    """Suggest up to ``n`` keys of ``[section]`` that ``key`` was probably meant to be.

    Case-only differences (``execstart``) come first, then difflib's close
    matches on the lowercased names.
    """
    keys = SECTION_KEYS.get(section, {})
    if n <= 0 or not keys:
        return []
    by_lower: dict[str, list[str]] = {}
    for name in keys:
        by_lower.setdefault(name.lower(), []).append(name)
    wanted = key.lower()
    out: list[str] = [name for name in by_lower.get(wanted, []) if name != key]
    for lowered in difflib.get_close_matches(wanted, list(by_lower), n=n + len(out), cutoff=0.6):
        for name in by_lower[lowered]:
            if name != key and name not in out:
                out.append(name)
    return out[:n]


def enum_accepts(section: str, key: str, value: str) -> bool | None:
    """Return whether ``value`` is an accepted value of enum setting ``key``; None if not an enum."""
    values = ENUMS.get((section, key))
    if values is None:
        return None
    if value in values and not value.endswith(":"):
        return True
    if any(v.endswith(":") and value.startswith(v) and len(value) > len(v) for v in values):
        return True
    if (section, key) in ENUMS_ACCEPT_BOOL and value.lower() in _BOOLS:
        return True
    if (section, key) in ENUMS_ACCEPT_INT and value.lstrip("-").isdigit():
        return True
    return False

