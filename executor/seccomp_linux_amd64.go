package executor

import "golang.org/x/sys/unix"

// These tables follow Docker's default seccomp profile
// (github.com/moby/profiles, seccomp/default.json) for amd64 and its i386
// compat ABI, for the capabilities a RUN step keeps: the unconditional
// allow list, the ptrace group (kernels >= 4.8), arch_prctl (amd64) and
// modify_ldt, and chroot (CAP_SYS_CHROOT). socket, personality, clone and
// clone3 have argument rules and are handled in seccompFilter. Profile
// names that an ABI lacks are left out; a system call the profile does
// not list is refused, as Docker does. The x32 ABI, which Docker allows,
// is refused: kernels rarely enable it.
//
// Generated from the profile and golang.org/x/sys/unix's zsysnum files;
// the i386 numbers are literals, as unix has no i386 names on amd64.

// seccompSupported: kiln has system call tables for this architecture.
const seccompSupported = true

var seccompABIs = []seccompABI{
	{
		arch:        unix.AUDIT_ARCH_X86_64,
		x32Bit:      0x40000000, // x32 shares the architecture; its numbers have this bit
		socket:      unix.SYS_SOCKET,
		personality: unix.SYS_PERSONALITY,
		clone:       unix.SYS_CLONE,
		clone3:      unix.SYS_CLONE3,
		allowed:     seccompAllowedAMD64,
	},
	{
		arch:        unix.AUDIT_ARCH_I386,
		socket:      359,
		personality: 136,
		clone:       120,
		clone3:      435,
		allowed:     seccompAllowed386,
	},
}

var seccompAllowedAMD64 = []uint32{
	unix.SYS_READ,
	unix.SYS_WRITE,
	unix.SYS_OPEN,
	unix.SYS_CLOSE,
	unix.SYS_STAT,
	unix.SYS_FSTAT,
	unix.SYS_LSTAT,
	unix.SYS_POLL,
	unix.SYS_LSEEK,
	unix.SYS_MMAP,
	unix.SYS_MPROTECT,
	unix.SYS_MUNMAP,
	unix.SYS_BRK,
	unix.SYS_RT_SIGACTION,
	unix.SYS_RT_SIGPROCMASK,
	unix.SYS_RT_SIGRETURN,
	unix.SYS_IOCTL,
	unix.SYS_PREAD64,
	unix.SYS_PWRITE64,
	unix.SYS_READV,
	unix.SYS_WRITEV,
	unix.SYS_ACCESS,
	unix.SYS_PIPE,
	unix.SYS_SELECT,
	unix.SYS_SCHED_YIELD,
	unix.SYS_MREMAP,
	unix.SYS_MSYNC,
	unix.SYS_MINCORE,
	unix.SYS_MADVISE,
	unix.SYS_SHMGET,
	unix.SYS_SHMAT,
	unix.SYS_SHMCTL,
	unix.SYS_DUP,
	unix.SYS_DUP2,
	unix.SYS_PAUSE,
	unix.SYS_NANOSLEEP,
	unix.SYS_GETITIMER,
	unix.SYS_ALARM,
	unix.SYS_SETITIMER,
	unix.SYS_GETPID,
	unix.SYS_SENDFILE,
	unix.SYS_CONNECT,
	unix.SYS_ACCEPT,
	unix.SYS_SENDTO,
	unix.SYS_RECVFROM,
	unix.SYS_SENDMSG,
	unix.SYS_RECVMSG,
	unix.SYS_SHUTDOWN,
	unix.SYS_BIND,
	unix.SYS_LISTEN,
	unix.SYS_GETSOCKNAME,
	unix.SYS_GETPEERNAME,
	unix.SYS_SOCKETPAIR,
	unix.SYS_SETSOCKOPT,
	unix.SYS_GETSOCKOPT,
	unix.SYS_FORK,
	unix.SYS_VFORK,
	unix.SYS_EXECVE,
	unix.SYS_EXIT,
	unix.SYS_WAIT4,
	unix.SYS_KILL,
	unix.SYS_UNAME,
	unix.SYS_SEMGET,
	unix.SYS_SEMOP,
	unix.SYS_SEMCTL,
	unix.SYS_SHMDT,
	unix.SYS_MSGGET,
	unix.SYS_MSGSND,
	unix.SYS_MSGRCV,
	unix.SYS_MSGCTL,
	unix.SYS_FCNTL,
	unix.SYS_FLOCK,
	unix.SYS_FSYNC,
	unix.SYS_FDATASYNC,
	unix.SYS_TRUNCATE,
	unix.SYS_FTRUNCATE,
	unix.SYS_GETDENTS,
	unix.SYS_GETCWD,
	unix.SYS_CHDIR,
	unix.SYS_FCHDIR,
	unix.SYS_RENAME,
	unix.SYS_MKDIR,
	unix.SYS_RMDIR,
	unix.SYS_CREAT,
	unix.SYS_LINK,
	unix.SYS_UNLINK,
	unix.SYS_SYMLINK,
	unix.SYS_READLINK,
	unix.SYS_CHMOD,
	unix.SYS_FCHMOD,
	unix.SYS_CHOWN,
	unix.SYS_FCHOWN,
	unix.SYS_LCHOWN,
	unix.SYS_UMASK,
	unix.SYS_GETTIMEOFDAY,
	unix.SYS_GETRLIMIT,
	unix.SYS_GETRUSAGE,
	unix.SYS_SYSINFO,
	unix.SYS_TIMES,
	unix.SYS_PTRACE,
	unix.SYS_GETUID,
	unix.SYS_GETGID,
	unix.SYS_SETUID,
	unix.SYS_SETGID,
	unix.SYS_GETEUID,
	unix.SYS_GETEGID,
	unix.SYS_SETPGID,
	unix.SYS_GETPPID,
	unix.SYS_GETPGRP,
	unix.SYS_SETSID,
	unix.SYS_SETREUID,
	unix.SYS_SETREGID,
	unix.SYS_GETGROUPS,
	unix.SYS_SETGROUPS,
	unix.SYS_SETRESUID,
	unix.SYS_GETRESUID,
	unix.SYS_SETRESGID,
	unix.SYS_GETRESGID,
	unix.SYS_GETPGID,
	unix.SYS_SETFSUID,
	unix.SYS_SETFSGID,
	unix.SYS_GETSID,
	unix.SYS_CAPGET,
	unix.SYS_CAPSET,
	unix.SYS_RT_SIGPENDING,
	unix.SYS_RT_SIGTIMEDWAIT,
	unix.SYS_RT_SIGQUEUEINFO,
	unix.SYS_RT_SIGSUSPEND,
	unix.SYS_SIGALTSTACK,
	unix.SYS_UTIME,
	unix.SYS_MKNOD,
	unix.SYS_STATFS,
	unix.SYS_FSTATFS,
	unix.SYS_GETPRIORITY,
	unix.SYS_SETPRIORITY,
	unix.SYS_SCHED_SETPARAM,
	unix.SYS_SCHED_GETPARAM,
	unix.SYS_SCHED_SETSCHEDULER,
	unix.SYS_SCHED_GETSCHEDULER,
	unix.SYS_SCHED_GET_PRIORITY_MAX,
	unix.SYS_SCHED_GET_PRIORITY_MIN,
	unix.SYS_SCHED_RR_GET_INTERVAL,
	unix.SYS_MLOCK,
	unix.SYS_MUNLOCK,
	unix.SYS_MLOCKALL,
	unix.SYS_MUNLOCKALL,
	unix.SYS_MODIFY_LDT,
	unix.SYS_PRCTL,
	unix.SYS_ARCH_PRCTL,
	unix.SYS_ADJTIMEX,
	unix.SYS_SETRLIMIT,
	unix.SYS_CHROOT,
	unix.SYS_SYNC,
	unix.SYS_GETTID,
	unix.SYS_READAHEAD,
	unix.SYS_SETXATTR,
	unix.SYS_LSETXATTR,
	unix.SYS_FSETXATTR,
	unix.SYS_GETXATTR,
	unix.SYS_LGETXATTR,
	unix.SYS_FGETXATTR,
	unix.SYS_LISTXATTR,
	unix.SYS_LLISTXATTR,
	unix.SYS_FLISTXATTR,
	unix.SYS_REMOVEXATTR,
	unix.SYS_LREMOVEXATTR,
	unix.SYS_FREMOVEXATTR,
	unix.SYS_TKILL,
	unix.SYS_TIME,
	unix.SYS_FUTEX,
	unix.SYS_SCHED_SETAFFINITY,
	unix.SYS_SCHED_GETAFFINITY,
	unix.SYS_SET_THREAD_AREA,
	unix.SYS_IO_SETUP,
	unix.SYS_IO_DESTROY,
	unix.SYS_IO_GETEVENTS,
	unix.SYS_IO_SUBMIT,
	unix.SYS_IO_CANCEL,
	unix.SYS_GET_THREAD_AREA,
	unix.SYS_EPOLL_CREATE,
	unix.SYS_EPOLL_CTL_OLD,
	unix.SYS_EPOLL_WAIT_OLD,
	unix.SYS_REMAP_FILE_PAGES,
	unix.SYS_GETDENTS64,
	unix.SYS_SET_TID_ADDRESS,
	unix.SYS_RESTART_SYSCALL,
	unix.SYS_SEMTIMEDOP,
	unix.SYS_FADVISE64,
	unix.SYS_TIMER_CREATE,
	unix.SYS_TIMER_SETTIME,
	unix.SYS_TIMER_GETTIME,
	unix.SYS_TIMER_GETOVERRUN,
	unix.SYS_TIMER_DELETE,
	unix.SYS_CLOCK_GETTIME,
	unix.SYS_CLOCK_GETRES,
	unix.SYS_CLOCK_NANOSLEEP,
	unix.SYS_EXIT_GROUP,
	unix.SYS_EPOLL_WAIT,
	unix.SYS_EPOLL_CTL,
	unix.SYS_TGKILL,
	unix.SYS_UTIMES,
	unix.SYS_MQ_OPEN,
	unix.SYS_MQ_UNLINK,
	unix.SYS_MQ_TIMEDSEND,
	unix.SYS_MQ_TIMEDRECEIVE,
	unix.SYS_MQ_NOTIFY,
	unix.SYS_MQ_GETSETATTR,
	unix.SYS_WAITID,
	unix.SYS_IOPRIO_SET,
	unix.SYS_IOPRIO_GET,
	unix.SYS_INOTIFY_INIT,
	unix.SYS_INOTIFY_ADD_WATCH,
	unix.SYS_INOTIFY_RM_WATCH,
	unix.SYS_OPENAT,
	unix.SYS_MKDIRAT,
	unix.SYS_MKNODAT,
	unix.SYS_FCHOWNAT,
	unix.SYS_FUTIMESAT,
	unix.SYS_NEWFSTATAT,
	unix.SYS_UNLINKAT,
	unix.SYS_RENAMEAT,
	unix.SYS_LINKAT,
	unix.SYS_SYMLINKAT,
	unix.SYS_READLINKAT,
	unix.SYS_FCHMODAT,
	unix.SYS_FACCESSAT,
	unix.SYS_PSELECT6,
	unix.SYS_PPOLL,
	unix.SYS_SET_ROBUST_LIST,
	unix.SYS_GET_ROBUST_LIST,
	unix.SYS_SPLICE,
	unix.SYS_TEE,
	unix.SYS_SYNC_FILE_RANGE,
	unix.SYS_VMSPLICE,
	unix.SYS_UTIMENSAT,
	unix.SYS_EPOLL_PWAIT,
	unix.SYS_SIGNALFD,
	unix.SYS_TIMERFD_CREATE,
	unix.SYS_EVENTFD,
	unix.SYS_FALLOCATE,
	unix.SYS_TIMERFD_SETTIME,
	unix.SYS_TIMERFD_GETTIME,
	unix.SYS_ACCEPT4,
	unix.SYS_SIGNALFD4,
	unix.SYS_EVENTFD2,
	unix.SYS_EPOLL_CREATE1,
	unix.SYS_DUP3,
	unix.SYS_PIPE2,
	unix.SYS_INOTIFY_INIT1,
	unix.SYS_PREADV,
	unix.SYS_PWRITEV,
	unix.SYS_RT_TGSIGQUEUEINFO,
	unix.SYS_RECVMMSG,
	unix.SYS_FANOTIFY_MARK,
	unix.SYS_PRLIMIT64,
	unix.SYS_NAME_TO_HANDLE_AT,
	unix.SYS_CLOCK_ADJTIME,
	unix.SYS_SYNCFS,
	unix.SYS_SENDMMSG,
	unix.SYS_GETCPU,
	unix.SYS_PROCESS_VM_READV,
	unix.SYS_PROCESS_VM_WRITEV,
	unix.SYS_SCHED_SETATTR,
	unix.SYS_SCHED_GETATTR,
	unix.SYS_RENAMEAT2,
	unix.SYS_SECCOMP,
	unix.SYS_GETRANDOM,
	unix.SYS_MEMFD_CREATE,
	unix.SYS_EXECVEAT,
	unix.SYS_MEMBARRIER,
	unix.SYS_MLOCK2,
	unix.SYS_COPY_FILE_RANGE,
	unix.SYS_PREADV2,
	unix.SYS_PWRITEV2,
	unix.SYS_PKEY_MPROTECT,
	unix.SYS_PKEY_ALLOC,
	unix.SYS_PKEY_FREE,
	unix.SYS_STATX,
	unix.SYS_IO_PGETEVENTS,
	unix.SYS_RSEQ,
	unix.SYS_URETPROBE,
	unix.SYS_PIDFD_SEND_SIGNAL,
	unix.SYS_PIDFD_OPEN,
	unix.SYS_CLOSE_RANGE,
	unix.SYS_OPENAT2,
	unix.SYS_FACCESSAT2,
	unix.SYS_EPOLL_PWAIT2,
	unix.SYS_LANDLOCK_CREATE_RULESET,
	unix.SYS_LANDLOCK_ADD_RULE,
	unix.SYS_LANDLOCK_RESTRICT_SELF,
	unix.SYS_MEMFD_SECRET,
	unix.SYS_PROCESS_MRELEASE,
	unix.SYS_FUTEX_WAITV,
	unix.SYS_CACHESTAT,
	unix.SYS_FCHMODAT2,
	unix.SYS_MAP_SHADOW_STACK,
	unix.SYS_FUTEX_WAKE,
	unix.SYS_FUTEX_WAIT,
	unix.SYS_FUTEX_REQUEUE,
	unix.SYS_STATMOUNT,
	unix.SYS_LISTMOUNT,
	unix.SYS_MSEAL,
	unix.SYS_SETXATTRAT,
	unix.SYS_GETXATTRAT,
	unix.SYS_LISTXATTRAT,
	unix.SYS_REMOVEXATTRAT,
}

var seccompAllowed386 = []uint32{
	0,   // restart_syscall
	1,   // exit
	2,   // fork
	3,   // read
	4,   // write
	5,   // open
	6,   // close
	7,   // waitpid
	8,   // creat
	9,   // link
	10,  // unlink
	11,  // execve
	12,  // chdir
	13,  // time
	14,  // mknod
	15,  // chmod
	16,  // lchown
	19,  // lseek
	20,  // getpid
	23,  // setuid
	24,  // getuid
	26,  // ptrace
	27,  // alarm
	29,  // pause
	30,  // utime
	33,  // access
	36,  // sync
	37,  // kill
	38,  // rename
	39,  // mkdir
	40,  // rmdir
	41,  // dup
	42,  // pipe
	43,  // times
	45,  // brk
	46,  // setgid
	47,  // getgid
	49,  // geteuid
	50,  // getegid
	54,  // ioctl
	55,  // fcntl
	57,  // setpgid
	60,  // umask
	61,  // chroot
	63,  // dup2
	64,  // getppid
	65,  // getpgrp
	66,  // setsid
	70,  // setreuid
	71,  // setregid
	75,  // setrlimit
	76,  // getrlimit
	77,  // getrusage
	78,  // gettimeofday
	80,  // getgroups
	81,  // setgroups
	82,  // select
	83,  // symlink
	85,  // readlink
	90,  // mmap
	91,  // munmap
	92,  // truncate
	93,  // ftruncate
	94,  // fchmod
	95,  // fchown
	96,  // getpriority
	97,  // setpriority
	99,  // statfs
	100, // fstatfs
	102, // socketcall
	104, // setitimer
	105, // getitimer
	106, // stat
	107, // lstat
	108, // fstat
	114, // wait4
	116, // sysinfo
	117, // ipc
	118, // fsync
	119, // sigreturn
	122, // uname
	123, // modify_ldt
	124, // adjtimex
	125, // mprotect
	126, // sigprocmask
	132, // getpgid
	133, // fchdir
	138, // setfsuid
	139, // setfsgid
	140, // _llseek
	141, // getdents
	142, // _newselect
	143, // flock
	144, // msync
	145, // readv
	146, // writev
	147, // getsid
	148, // fdatasync
	150, // mlock
	151, // munlock
	152, // mlockall
	153, // munlockall
	154, // sched_setparam
	155, // sched_getparam
	156, // sched_setscheduler
	157, // sched_getscheduler
	158, // sched_yield
	159, // sched_get_priority_max
	160, // sched_get_priority_min
	161, // sched_rr_get_interval
	162, // nanosleep
	163, // mremap
	164, // setresuid
	165, // getresuid
	168, // poll
	170, // setresgid
	171, // getresgid
	172, // prctl
	173, // rt_sigreturn
	174, // rt_sigaction
	175, // rt_sigprocmask
	176, // rt_sigpending
	177, // rt_sigtimedwait
	178, // rt_sigqueueinfo
	179, // rt_sigsuspend
	180, // pread64
	181, // pwrite64
	182, // chown
	183, // getcwd
	184, // capget
	185, // capset
	186, // sigaltstack
	187, // sendfile
	190, // vfork
	191, // ugetrlimit
	192, // mmap2
	193, // truncate64
	194, // ftruncate64
	195, // stat64
	196, // lstat64
	197, // fstat64
	198, // lchown32
	199, // getuid32
	200, // getgid32
	201, // geteuid32
	202, // getegid32
	203, // setreuid32
	204, // setregid32
	205, // getgroups32
	206, // setgroups32
	207, // fchown32
	208, // setresuid32
	209, // getresuid32
	210, // setresgid32
	211, // getresgid32
	212, // chown32
	213, // setuid32
	214, // setgid32
	215, // setfsuid32
	216, // setfsgid32
	218, // mincore
	219, // madvise
	220, // getdents64
	221, // fcntl64
	224, // gettid
	225, // readahead
	226, // setxattr
	227, // lsetxattr
	228, // fsetxattr
	229, // getxattr
	230, // lgetxattr
	231, // fgetxattr
	232, // listxattr
	233, // llistxattr
	234, // flistxattr
	235, // removexattr
	236, // lremovexattr
	237, // fremovexattr
	238, // tkill
	239, // sendfile64
	240, // futex
	241, // sched_setaffinity
	242, // sched_getaffinity
	243, // set_thread_area
	244, // get_thread_area
	245, // io_setup
	246, // io_destroy
	247, // io_getevents
	248, // io_submit
	249, // io_cancel
	250, // fadvise64
	252, // exit_group
	254, // epoll_create
	255, // epoll_ctl
	256, // epoll_wait
	257, // remap_file_pages
	258, // set_tid_address
	259, // timer_create
	260, // timer_settime
	261, // timer_gettime
	262, // timer_getoverrun
	263, // timer_delete
	265, // clock_gettime
	266, // clock_getres
	267, // clock_nanosleep
	268, // statfs64
	269, // fstatfs64
	270, // tgkill
	271, // utimes
	272, // fadvise64_64
	277, // mq_open
	278, // mq_unlink
	279, // mq_timedsend
	280, // mq_timedreceive
	281, // mq_notify
	282, // mq_getsetattr
	284, // waitid
	289, // ioprio_set
	290, // ioprio_get
	291, // inotify_init
	292, // inotify_add_watch
	293, // inotify_rm_watch
	295, // openat
	296, // mkdirat
	297, // mknodat
	298, // fchownat
	299, // futimesat
	300, // fstatat64
	301, // unlinkat
	302, // renameat
	303, // linkat
	304, // symlinkat
	305, // readlinkat
	306, // fchmodat
	307, // faccessat
	308, // pselect6
	309, // ppoll
	311, // set_robust_list
	312, // get_robust_list
	313, // splice
	314, // sync_file_range
	315, // tee
	316, // vmsplice
	318, // getcpu
	319, // epoll_pwait
	320, // utimensat
	321, // signalfd
	322, // timerfd_create
	323, // eventfd
	324, // fallocate
	325, // timerfd_settime
	326, // timerfd_gettime
	327, // signalfd4
	328, // eventfd2
	329, // epoll_create1
	330, // dup3
	331, // pipe2
	332, // inotify_init1
	333, // preadv
	334, // pwritev
	335, // rt_tgsigqueueinfo
	337, // recvmmsg
	339, // fanotify_mark
	340, // prlimit64
	341, // name_to_handle_at
	343, // clock_adjtime
	344, // syncfs
	345, // sendmmsg
	347, // process_vm_readv
	348, // process_vm_writev
	351, // sched_setattr
	352, // sched_getattr
	353, // renameat2
	354, // seccomp
	355, // getrandom
	356, // memfd_create
	358, // execveat
	360, // socketpair
	361, // bind
	362, // connect
	363, // listen
	364, // accept4
	365, // getsockopt
	366, // setsockopt
	367, // getsockname
	368, // getpeername
	369, // sendto
	370, // sendmsg
	371, // recvfrom
	372, // recvmsg
	373, // shutdown
	375, // membarrier
	376, // mlock2
	377, // copy_file_range
	378, // preadv2
	379, // pwritev2
	380, // pkey_mprotect
	381, // pkey_alloc
	382, // pkey_free
	383, // statx
	385, // io_pgetevents
	386, // rseq
	393, // semget
	394, // semctl
	395, // shmget
	396, // shmctl
	397, // shmat
	398, // shmdt
	399, // msgget
	400, // msgsnd
	401, // msgrcv
	402, // msgctl
	403, // clock_gettime64
	405, // clock_adjtime64
	406, // clock_getres_time64
	407, // clock_nanosleep_time64
	408, // timer_gettime64
	409, // timer_settime64
	410, // timerfd_gettime64
	411, // timerfd_settime64
	412, // utimensat_time64
	413, // pselect6_time64
	414, // ppoll_time64
	416, // io_pgetevents_time64
	417, // recvmmsg_time64
	418, // mq_timedsend_time64
	419, // mq_timedreceive_time64
	420, // semtimedop_time64
	421, // rt_sigtimedwait_time64
	422, // futex_time64
	423, // sched_rr_get_interval_time64
	424, // pidfd_send_signal
	434, // pidfd_open
	436, // close_range
	437, // openat2
	439, // faccessat2
	441, // epoll_pwait2
	444, // landlock_create_ruleset
	445, // landlock_add_rule
	446, // landlock_restrict_self
	447, // memfd_secret
	448, // process_mrelease
	449, // futex_waitv
	451, // cachestat
	452, // fchmodat2
	453, // map_shadow_stack
	454, // futex_wake
	455, // futex_wait
	456, // futex_requeue
	457, // statmount
	458, // listmount
	462, // mseal
	463, // setxattrat
	464, // getxattrat
	465, // listxattrat
	466, // removexattrat
}
