/* ptspec kdiff shim: nothing of linux/pgtable.h is needed beyond linux/kvm_host.h. */
#include <linux/kvm_host.h>
