# Reference-count operations of one in-process KV read, by the class of the object and the function that
# made them (a gdb script; docs/benchmarks.md, "Two threads on one vault"). Every swift_retain/swift_release
# on an object that lives longer than one request is an atomic write to that object's first cache line,
# which a second core reading the same vault must then fetch back: that traffic, not locks, is what keeps
# two threads from doubling one's reads.
#
#   objcopy --strip-debug <release coffer-bench> /tmp/cb    # gdb reads lld's DWARF slowly and noisily
#   gdb -batch -x bench/retains-read.py --args /tmp/cb inprocess --iterations 2000 --only "kv read (Swift API, handle)"
#
# It traces two consecutive `Vault.handle` calls after 300 warm-up calls, on the calling thread only (a
# background thread's operations are left out), and reports the second. An object not allocated since the
# first call began is counted as long-lived: shared by every request, as the vault's own objects and cache
# entries are. Statically allocated empty collections are listed too; their counts are never written
# (immortal), so they cost no cache traffic. Prints one line per class, caller (with the
# return address's offset in it) and operation.
import collections

import gdb

HANDLE = "$s6Coffer5VaultC6handley0A4Core8ResponseVAE7RequestVnAE0A5ErrorVYKF"
WARM_UP = 300
POINTER_MASK = 0x00FFFFFFFFFFFFF8  # what swift_retain masks a bridged pointer with on x86_64
names = {}
calls = [[], []]  # (kind, class, caller, address) per traced call
state = {"call": -1, "thread": None}


def read_word(address):
    return int(gdb.parse_and_eval(f"*(unsigned long*){address}"))


def class_name(obj):
    address = int(obj) & POINTER_MASK
    if address < 0x10000:
        return None, address
    try:
        metadata = read_word(address)
    except gdb.error:
        return None, address  # an immortal literal's pointer, not an object
    if metadata not in names:
        symbol = gdb.execute(f"info symbol {metadata}", to_string=True).strip()
        if symbol.startswith(("No symbol", "InitialAllocationPool")):
            try:
                kind = read_word(metadata)
                if kind == 0 or kind > 0x7FF:  # class metadata: its nominal type descriptor's name
                    descriptor = read_word(metadata + 40)
                    offset = int(gdb.parse_and_eval(f"*(int*){descriptor + 8}"))
                    symbol = gdb.parse_and_eval(f"(char*){descriptor + 8 + offset}").string(length=80)
                else:
                    symbol = f"<metadata kind {kind:#x}>"
            except (gdb.error, UnicodeDecodeError):
                symbol = None
        else:
            symbol = symbol.split(" in section")[0]
        names[metadata] = symbol
    return names[metadata], address


def caller():
    frame = gdb.newest_frame().older()
    helpers = ("Vwxx", "Vwcp", "WOh", "WOc", "WOy", "WOe", "WOs", "Wb")
    while frame is not None and frame.name() and (frame.name().startswith("swift_") or frame.name().endswith(helpers)):
        frame = frame.older()
    if frame is None:
        return "?"
    # "<symbol> + <offset>": the offset finds the call in `objdump -d` of the function.
    return gdb.execute(f"info symbol {frame.pc()}", to_string=True).split(" in section")[0].strip()


class Counted(gdb.Breakpoint):
    def __init__(self, symbol, kind):
        super().__init__(symbol, internal=True)
        self.kind = kind
        self.enabled = False

    def stop(self):
        if gdb.selected_thread().num != state["thread"]:
            return False
        name, address = class_name(gdb.parse_and_eval("$rdi"))
        if name is not None:
            calls[state["call"]].append((self.kind, name, caller(), address))
        return False


class Allocated(gdb.FinishBreakpoint):
    def stop(self):
        allocated.add(int(gdb.parse_and_eval("$rax")) & POINTER_MASK)
        return False


class Allocation(gdb.Breakpoint):
    def __init__(self):
        super().__init__("swift_allocObject", internal=True)
        self.enabled = False

    def stop(self):
        if gdb.selected_thread().num == state["thread"]:
            Allocated(gdb.newest_frame(), internal=True)
        return False


allocated = set()  # objects allocated since the first traced call began: per request
counted = [Counted("swift_retain", "retain"), Counted("swift_release", "release"), Allocation()]


class Handle(gdb.Breakpoint):
    def __init__(self):
        super().__init__(HANDLE, internal=True)
        self.hits = 0

    def stop(self):
        self.hits += 1
        if self.hits < WARM_UP:
            return False
        state["call"] = self.hits - WARM_UP
        state["thread"] = gdb.selected_thread().num
        if state["call"] < 2:
            for b in counted:
                b.enabled = True
            return False
        for b in counted:
            b.enabled = False
        report()
        return True


def report():
    rows = collections.Counter()
    for kind, name, where, address in calls[1]:
        rows[(address not in allocated, name, where, kind)] += 1
    total = len(calls[1])
    shared = sum(n for (lived, *_), n in rows.items() if lived)
    print(f"\nreference-count operations in one KV read: {total}; on long-lived objects: {shared}")
    print("long-lived  count  op       class  <-  caller")
    for (lived, name, where, kind), n in sorted(rows.items(), key=lambda r: (not r[0][0], -r[1], r[0][1])):
        print(f"{'yes' if lived else 'no':>10}  {n:5}  {kind:7}  {name}  <-  {where}")


Handle()
gdb.execute("run")
gdb.execute("kill")
