/* Copyright (c) repseg contributors. All rights reserved.
 *
 * LD_PRELOAD library that hides CPU features from a process, so that every
 * library in it (ONNX Runtime's MLAS, oneDNN, PyTorch's ATen, MKL) picks the
 * kernels it would pick on a CPU without them: the AVX2 code path of an
 * AVX-512 VNNI machine can be measured on that machine.
 *
 * How: Linux's CPUID faulting (arch_prctl(ARCH_SET_CPUID, 0), per thread,
 * inherited by threads and forks) turns every user-space `cpuid` into a
 * SIGSEGV; the handler runs the real cpuid with faulting briefly off, clears
 * the bits named in REPSEG_CPUID_MASK and resumes after the instruction.
 * Faults that are not a cpuid go to the handler the program installed (its
 * sigaction/signal calls for SIGSEGV are kept aside for that), or kill the
 * process as they would have.
 *
 * REPSEG_CPUID_MASK: "LEAF.SUBLEAF.REG=MASK,..." (REG one of eax ebx ecx
 * edx; numbers in C notation), written by repseg.ops.isa_mask.  If the mask
 * cannot be parsed or faulting cannot be enabled the process exits with
 * status 3 and a line on stderr: a figure labelled with a smaller ISA than
 * the one that ran would be worse than no figure.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define MAX_MASKS 32

struct mask {
    uint32_t leaf, subleaf;
    int reg; /* 0 eax, 1 ebx, 2 ecx, 3 edx */
    uint32_t bits;
};

static struct mask masks[MAX_MASKS];
static int n_masks;
static struct sigaction program_action; /* the program's SIGSEGV action */
static int active;

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static sigaction_fn real_sigaction(void) {
    static sigaction_fn fn;
    if (!fn)
        fn = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    return fn;
}

static int set_faulting(int on) {
    return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1);
}

static void pass_on(int sig, siginfo_t *info, void *ctx) {
    struct sigaction act = program_action;
    if ((act.sa_flags & SA_SIGINFO) && act.sa_sigaction) {
        act.sa_sigaction(sig, info, ctx);
    } else if (act.sa_handler != SIG_DFL && act.sa_handler != SIG_IGN) {
        act.sa_handler(sig);
    } else {
        /* return to the faulting instruction with the default action: the
         * process dies of this SIGSEGV as it would have without us */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        real_sigaction()(SIGSEGV, &dfl, NULL);
    }
}

static void on_segv(int sig, siginfo_t *info, void *ctx_) {
    ucontext_t *ctx = ctx_;
    greg_t *r = ctx->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (info->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) {
        pass_on(sig, info, ctx_);
        return;
    }
    uint32_t leaf = (uint32_t)r[REG_RAX], subleaf = (uint32_t)r[REG_RCX];
    uint32_t out[4];
    int saved = errno;
    set_faulting(0);
    __cpuid_count(leaf, subleaf, out[0], out[1], out[2], out[3]);
    set_faulting(1);
    errno = saved;
    for (int i = 0; i < n_masks; ++i)
        if (masks[i].leaf == leaf && masks[i].subleaf == subleaf)
            out[masks[i].reg] &= ~masks[i].bits;
    r[REG_RAX] = out[0];
    r[REG_RBX] = out[1];
    r[REG_RCX] = out[2];
    r[REG_RDX] = out[3];
    r[REG_RIP] += 2;
}

/* The program's own SIGSEGV handlers (Python's faulthandler, crash
 * reporters) are kept aside and called for faults that are not a cpuid. */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (sig != SIGSEGV || !active)
        return real_sigaction()(sig, act, old);
    if (old)
        *old = program_action;
    if (act)
        program_action = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, &old) != 0)
        return SIG_ERR;
    return old.sa_handler;
}

static void die(const char *what) {
    fprintf(stderr, "repseg cpuid mask: %s; nothing was run\n", what);
    _exit(3);
}

static void parse(const char *spec) {
    static const char *regs[4] = {"eax", "ebx", "ecx", "edx"};
    char *copy = strdup(spec), *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char reg[8];
        unsigned long leaf, subleaf, bits;
        int used = 0;
        if (n_masks == MAX_MASKS)
            die("REPSEG_CPUID_MASK has too many entries");
        if (sscanf(item, "%li.%li.%3[a-z]=%li%n", (long *)&leaf,
                   (long *)&subleaf, reg, (long *)&bits, &used) != 4 ||
            item[used] != '\0')
            die("REPSEG_CPUID_MASK is not LEAF.SUBLEAF.REG=MASK,...");
        int k = -1;
        for (int j = 0; j < 4; ++j)
            if (strcmp(reg, regs[j]) == 0)
                k = j;
        if (k < 0)
            die("REPSEG_CPUID_MASK names a register other than eax..edx");
        masks[n_masks++] = (struct mask){(uint32_t)leaf, (uint32_t)subleaf, k,
                                         (uint32_t)bits};
    }
    free(copy);
}

__attribute__((constructor)) static void install(void) {
    const char *spec = getenv("REPSEG_CPUID_MASK");
    if (!spec || !*spec)
        return;
    parse(spec);
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = on_segv;
    act.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&act.sa_mask);
    if (real_sigaction()(SIGSEGV, &act, &program_action) != 0)
        die("cannot install the SIGSEGV handler");
    if (set_faulting(1) != 0)
        die(errno == ENODEV
                ? "this CPU or kernel has no CPUID faulting (cpuid_fault)"
                : "arch_prctl(ARCH_SET_CPUID) failed");
    active = 1;
}
